"""Other projects' files, read and written in their own formats (no store, no Dask).

- CMB-ML's FITS trees: ``cmbml_files`` (names, FITS headers and maps, parameters, spectra) and
  ``cmbml_scan`` (a tree checked file by file -> Plan, and the recipe describing it); the stages
  that move whole trees are :mod:`cmbcube.stages.ingest` and :mod:`cmbcube.stages.export`;
- the simulator's optional inputs: ``templates`` (the pysm3 template search path and presets),
  ``planck`` (Planck variance maps, cosmology chains);
- external input files: ``inputs`` (which files a recipe needs, which are missing), ``assets``
  (where each comes from and goes; mirror manifests), ``fetch`` (downloading them).
"""
