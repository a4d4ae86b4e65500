"""Face restoration as a post-processing stage over any engine's frames (GFPGAN v1.3/v1.4)."""
