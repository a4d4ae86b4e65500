"""Frame stages: work that runs on an engine's frames before encoding (face restoration, caption burn-in)."""
