"""What is trained: data splits on the device, model builders, the inner optimiser.

Knows nothing of teachers or gymnasium, so every layer above can build on it.
"""
