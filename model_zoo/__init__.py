"""Reference PSCNet model (PyTorch). The only part of psc6k that imports torch."""
