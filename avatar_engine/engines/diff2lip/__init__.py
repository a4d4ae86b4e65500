"""`diff2lip`: Diff2Lip (soumik-kanad/diff2lip, CC BY-NC 4.0) diffusion inpainting of the lower face.

Alone over the embedded engine's head motion, or as a lip stage over another engine's frames.

Modules: config (flags), nets (the UNet), sampler (respaced DDIM), conditioning (one window), checkpoints
(lookup, strict load, cache), lips (the stage over a frame stream), engine (the `Engine`). Importing this
package imports no torch: it loads with `nets`, `sampler`, `conditioning` and `lips`.
"""

from .engine import Diff2LipEngine

__all__ = ["Diff2LipEngine"]
