"""The runtime kit: checkpoint file -> model on a device (device probe, checkpoint lookup and
loading, model cache, precision, det-weights, the model inventory). torch is imported only inside
the functions that need it, so importing this kit costs nothing for the embedded engine.
"""
