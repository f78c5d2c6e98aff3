"""The compute layer: how the stages run their units of work, below the stages and above the cube.

- :mod:`cmbcube.compute.cluster`: Dask clients from the command line or a recipe's ``cluster:`` section;
- :mod:`cmbcube.compute.fanout`: the one fan-out (one task per unit, failures collected) and
  :class:`~cmbcube.compute.fanout.StageReport`, the report every stage's ``run`` returns;
- :mod:`cmbcube.compute.limits`: disk, memory and size limits checked before anything starts.

Stages import this layer; it never imports the stages (nor the command line), and science/ never
imports it (tests/test_architecture.py).
"""
