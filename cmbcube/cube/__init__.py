"""The cube: one Zarr v3 store holding every product, indexed by
(split, sim, detector, field, pixel).  The only package that knows the layout;
store_layout.md describes it for people who never read this code.

Modules (each re-exported here, so ``from cmbcube import cube; cube.write_sim(...)`` works):

- :mod:`~cmbcube.cube.layout`   the product table (``PRODUCTS``) and the store template built from it;
- :mod:`~cmbcube.cube.store`    create or reuse a store, attributes, locks, metadata transactions,
  consolidation, whole arrays;
- :mod:`~cmbcube.cube.remote`   opening for reading (local or fsspec URL, guarded, bounds checked);
- :mod:`~cmbcube.cube.sims`     simulated products, done-flags, beams;
- :mod:`~cmbcube.cube.runs`     the run axis, predictions, losses, checkpoints folder, removing runs;
- :mod:`~cmbcube.cube.info`     ``cmbcube info`` and sizes;
- :mod:`~cmbcube.cube.analysis_io`, :mod:`~cmbcube.cube.stats_io`   the analysis' and preprocess'
  products (masks, metrics, spectra, windows; normalisation statistics);
- :mod:`~cmbcube.cube.guard`, :mod:`~cmbcube.cube.shardread`, :mod:`~cmbcube.cube.verify`,
  :mod:`~cmbcube.cube.drop` (:mod:`~cmbcube.cube.drop_remote` for Icechunk and s3:// stores),
  :mod:`~cmbcube.cube.datasets`: guarded reads, the shard index, ``cmbcube verify``, ``cmbcube drop``,
  torch datasets.
"""
from __future__ import annotations

from cmbcube.cube.info import disk_size, human, require_store, summary  # noqa: F401
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
from cmbcube.cube.remote import (  # noqa: F401
    MAX_AXIS,
    MAX_NSIDE,
    MAX_PIXELS,
    check_bounds,
    open_dataset,
    read_group,
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
    runs_dir,
    safe_name,
    set_run_epoch,
    write_losses,
    write_prediction,
)
from cmbcube.cube.sims import (  # noqa: F401
    bandpass,
    clear_done,
    cmb_unit,
    component_names,
    detector_beams,
    detector_units,
    detectors,
    done_flags,
    fields,
    finished,
    flagged_without_data,
    has_noise,
    holds_recipe,
    nside,
    pending,
    planned,
    read_cmb,
    read_components,
    read_noise,
    read_obs,
    read_theory,
    run_beam,
    truth_beam,
    write_sim,
)
from cmbcube.cube.store import (  # noqa: F401
    DROP_JOURNAL_ATTR,
    DROPPED_ATTR,
    StoreError,
    array_dims,
    consolidate,
    create_array,
    create_or_check,
    delete_arrays,
    dropped_products,
    fresh_group,
    is_remote,
    local_store_attrs,
    metadata_transaction,
    open_group,
    os_error_message,
    outer_chunks,
    read_attrs,
    record_dropped,
    sims_lock,
    source_group,
    store_lock,
    store_recipe,
    unit_files,
    update_attrs,
    write_variables,
)
from cmbcube.recipe import SPLITS  # noqa: F401 - historical: cube.SPLITS
