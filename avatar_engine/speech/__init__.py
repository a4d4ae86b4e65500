"""Speech analysis that drives the mouth: loudness/spectral features, phones, visemes."""
