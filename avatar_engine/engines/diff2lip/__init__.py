"""`diff2lip`: Diff2Lip (soumik-kanad/diff2lip, CC BY-NC 4.0) diffusion inpainting of the lower face.

Phase 1 holds the network, the sampler, the conditioning and checkpoint loading; the engine comes later.
Importing the package costs nothing: torch loads with `nets`, `sampler` and `conditioning`.
"""
