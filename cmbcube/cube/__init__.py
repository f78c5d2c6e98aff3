"""The cube: one Zarr v3 store holding every product, indexed by
(split, sim, detector, field, pixel).  The only package that knows the layout;
store_layout.md describes it for people who never read this code.

Modules (each re-exported here, so ``from cmbcube import cube; cube.write_sim(...)`` works):

- :mod:`~cmbcube.cube.base`     the bottom: StoreError, URL or path, housekeeping attribute names, unit files;
- :mod:`~cmbcube.cube.layout`   the product table (``PRODUCTS``) and the store template built from it;
- :mod:`~cmbcube.cube.opener`   the one way into a store: every opening (local or fsspec URL, Icechunk,
  s3://), guarded and bounds checked by default, each mode one function;
- :mod:`~cmbcube.cube.facts`    the store's facts, one function each: nside, units, fields, detectors, beams;
- :mod:`~cmbcube.cube.store`    create or reuse a store, locks, metadata transactions, consolidation,
  whole arrays;
- :mod:`~cmbcube.cube.location` where a store lives: names, writable folders, the runs folder beside it;
- :mod:`~cmbcube.cube.sims`     simulated products, done-flags;
- :mod:`~cmbcube.cube.runs`     the run axis, predictions, losses, removing runs;
- :mod:`~cmbcube.cube.info`     ``cmbcube info`` and sizes;
- :mod:`~cmbcube.cube.analysis_io`, :mod:`~cmbcube.cube.stats_io`   the analysis' and preprocess'
  products (masks, metrics, spectra, windows; normalisation statistics);
- :mod:`~cmbcube.cube.guard`, :mod:`~cmbcube.cube.shardread`, :mod:`~cmbcube.cube.verify`,
  :mod:`~cmbcube.cube.drop` (:mod:`~cmbcube.cube.drop_remote` for Icechunk and s3:// stores),
  :mod:`~cmbcube.cube.datasets`: guarded reads, the shard index, ``cmbcube verify``, ``cmbcube drop``,
  torch datasets.

Inside cube/ the imports form no circle (tests/test_architecture.py checks it, imports inside functions
included): a module that two others share moves down (base, drop_plan, verify_report).
"""
from __future__ import annotations

from cmbcube.cube.base import (  # noqa: F401
    DROP_JOURNAL_ATTR,
    DROPPED_ATTR,
    StoreError,
    array_dims,
    is_remote,
    os_error_message,
    outer_chunks,
    unit_files,
)
from cmbcube.cube.facts import (  # noqa: F401
    bandpass,
    cmb_unit,
    detector_beams,
    detector_units,
    detectors,
    fields,
    nside,
    run_beam,
    truth_beam,
)
from cmbcube.cube.info import disk_size, human, summary  # noqa: F401
from cmbcube.cube.layout import (  # noqa: F401
    LAYOUT_VERSION,
    PRODUCTS,
    RUN_ARRAYS,
    SIM_PRODUCTS,
    codecs,
    foreground_model_attrs,
    package_versions,
    template,
)
from cmbcube.cube.location import require_store, runs_dir  # noqa: F401
from cmbcube.cube.opener import (  # noqa: F401
    MAX_AXIS,
    MAX_NSIDE,
    MAX_PIXELS,
    check_bounds,
    fresh_group,
    open_dataset,
    open_group,
    read_attrs,
    read_group,
    source_group,
    zarr_store,
)
from cmbcube.cube.runs import (  # noqa: F401
    RunMismatch,
    check_run_name,
    clear_run_done,
    delete_run_chunks,
    ensure_run,
    pending_predictions,
    pred_done_count,
    prediction_done,
    remove_run,
    run_axis_arrays,
    run_config,
    run_dir,
    run_epoch,
    run_index,
    run_pending,
    safe_name,
    set_run_epoch,
    write_losses,
    write_prediction,
)
from cmbcube.cube.sims import (  # noqa: F401
    clear_done,
    component_names,
    done_flags,
    finished,
    flagged_without_data,
    has_noise,
    holds_recipe,
    pending,
    planned,
    read_cmb,
    read_components,
    read_noise,
    read_obs,
    read_theory,
    write_sim,
)
from cmbcube.cube.store import (  # noqa: F401
    consolidate,
    create_array,
    create_or_check,
    delete_arrays,
    dropped_products,
    local_store_attrs,
    metadata_transaction,
    record_dropped,
    sims_lock,
    store_lock,
    store_recipe,
    update_attrs,
    write_variables,
)
from cmbcube.recipe import SPLITS  # noqa: F401 - historical: cube.SPLITS
