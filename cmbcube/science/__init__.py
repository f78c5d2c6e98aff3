"""The physics layer: pure numpy/healpy/pysm3/CAMB functions of arrays and parameters.

Nothing here opens a store, reads a file, sets the environment or talks to Dask: callers pass
arrays in and get arrays out, so every function can be tested (and reasoned about) on its own.
"""
