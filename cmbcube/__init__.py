"""cmbcube: CMB component-separation benchmarks as one chunked Zarr data cube.

>>> import cmbcube
>>> cube = cmbcube.open("quickstart.zarr")            # doctest: +SKIP
>>> cube.obs.sel(split="test", sim=0, detector=143, field="Q")   # doctest: +SKIP

Stages are modules: ``cmbcube.stages.simulate.run(recipe_or_path, store)``.
"""
__version__ = "0.1.0"


def open(path, **storage_options):  # noqa: A001 - the public verb is cmbcube.open
    """Open a cube lazily (local path or fsspec URL) as an xarray Dataset.

    ``obs.sel(split=, sim=, detector=<GHz>, field=)`` is a 1-D HEALPix map
    (NESTED); ``cmb`` the truth; ``sim_done`` says which sims are complete.
    """
    from cmbcube.cube import open_dataset
    return open_dataset(str(path), **storage_options)
