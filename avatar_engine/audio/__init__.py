"""Audio kit: decoding to the analysis rate, the one mel front end, the one frame-count rule."""
