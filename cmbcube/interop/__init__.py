"""Files from and for other tools: CMB-ML's FITS trees (ingest, export) and external assets
(pysm3 templates, Planck maps)."""
