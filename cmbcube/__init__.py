"""cmbcube: CMB component-separation benchmarks as one chunked Zarr data cube.

>>> import cmbcube
>>> cube = cmbcube.open("quickstart.zarr")            # doctest: +SKIP
>>> cube.obs.sel(split="test", sim=0, detector=143, field="Q")   # doctest: +SKIP

Stages are modules: ``cmbcube.stages.simulate.run(recipe_or_path, store)``.
"""
__version__ = "0.1.0"


def open(path, version=None, **storage_options):  # noqa: A001 - the public verb is cmbcube.open
    """Open a cube lazily (local path, fsspec URL or Icechunk store) as an xarray Dataset.

    ``version``: a tag, branch or snapshot id of an Icechunk store (``icechunk+...``); the dataset's
    ``attrs["icechunk_snapshot"]`` names the snapshot read, for citing.

    ``obs.sel(split=, sim=, detector=<GHz>, field=)`` is a 1-D HEALPix map
    (NESTED); ``cmb`` the truth; ``sim_done`` says which sims are complete.
    """
    from cmbcube.cube import icechunk_store, open_dataset
    return open_dataset(icechunk_store.with_version(str(path), version), **storage_options)
