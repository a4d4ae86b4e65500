"""`musetalk`: MuseTalk 1.5 (TMElyralab/MuseTalk; code MIT, weights OpenRAIL-M) one-step latent inpainting of
the lower face at 256 px, conditioned on whisper-tiny audio features.

Modules: layout (the mounted files, strict loading, cache), audio (whisper features -> per-frame windows),
latents (positional encoding, VAE in/out, the UNet step), geometry (crop boxes from the face mesh, the
jaw mask, upstream's paste-back), lips (the stage over a frame stream), engine (the `Engine`). Importing this
package imports neither torch nor diffusers: they load when the engine runs.
"""

from .engine import MuseTalkEngine

__all__ = ["MuseTalkEngine"]
