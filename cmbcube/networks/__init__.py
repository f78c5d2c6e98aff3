"""The network layer: torch models that separate the CMB from multi-frequency maps."""
