"""cmbcube: CMB component-separation benchmarks as one chunked Zarr data cube.

>>> import cmbcube
>>> cube = cmbcube.open("quickstart.zarr")            # doctest: +SKIP
>>> cube.obs.sel(split="test", sim=0, detector=143, field="Q")   # doctest: +SKIP
>>> test = cmbcube.open("quickstart.zarr", split="test")          # doctest: +SKIP
>>> test.metrics.sel(run="nilc", field="I", metric="mae", beam=20.6)   # doctest: +SKIP

Stages are modules: ``cmbcube.stages.simulate.run(recipe_or_path, store)``.
"""
__version__ = "0.1.0"


def open(path, split=None, version=None, **storage_options):  # noqa: A001 - the public verb is cmbcube.open
    """Open a cube lazily (local path, fsspec URL or Icechunk store) as an xarray Dataset.

    ``version``: a tag, branch or snapshot id of an Icechunk store (``icechunk+...``); the dataset's
    ``attrs["icechunk_snapshot"]`` names the snapshot read, for citing.

    ``obs.sel(split=, sim=, detector=<GHz>, field=)`` is a 1-D HEALPix map
    (NESTED); ``cmb`` the truth; ``sim_done`` says which sims are complete.
    A sim reads complete or as NaN (never in part, even while simulate writes
    it; its state is fixed at the first read touching it: reopen to see sims
    finished since).  The ``sim`` axis is as long as the largest split: the
    sims past a smaller split's ``n_sims`` are NaN padding, marked by the
    ``sim_exists`` (split, sim) coordinate; ``split="test"`` returns that split
    only, with only its own sims.  ``metrics``' ``beam`` axis has the common
    beam FWHM (arcmin) as its values: ``.sel(beam=20.6)``.
    """
    from cmbcube.cube import icechunk_store
    from cmbcube.cube.public import open_cube
    return open_cube(icechunk_store.with_version(str(path), version), split=split, **storage_options)
