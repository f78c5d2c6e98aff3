"""The stage layer: each module is one step of the benchmark (simulate, preprocess, ilc, train,
predict, analyze, report, view) fanned out over Dask and reading/writing only through the cube."""
