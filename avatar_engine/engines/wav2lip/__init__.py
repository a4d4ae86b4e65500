"""`wav2lip`: Wav2Lip lips (Rudrabha/Wav2Lip) over the embedded engine's motion, and as a lip stage for others."""

from .engine import Wav2LipEngine

__all__ = ["Wav2LipEngine"]
