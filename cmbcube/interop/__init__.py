"""Files from and for other tools.

- CMB-ML's FITS trees: ``cmbml_files`` (names, FITS headers and maps, parameters, spectra),
  ``cmbml_scan`` (a tree checked file by file -> Plan, and the recipe describing it),
  ``ingest`` (tree -> cube), ``export`` (cube -> tree);
- external input files: ``inputs`` (which files a recipe needs, which are missing), ``assets``
  (where each comes from and goes; mirror manifests), ``fetch`` (downloading them).
"""
