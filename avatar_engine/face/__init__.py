"""Face geometry: MediaPipe detection + 468-point mesh, and named landmark groups."""
