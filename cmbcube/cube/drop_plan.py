"""What ``cmbcube drop`` may remove and what it refuses, for every kind of store: the choices (from the
layout's product table), the refusals made before anything is dropped, and the report.  The local
store's drop is :mod:`cmbcube.cube.drop`, Icechunk's and s3://'s :mod:`cmbcube.cube.drop_remote`."""
from __future__ import annotations

import dataclasses

from cmbcube.cube import layout
from cmbcube.cube.base import StoreError
from cmbcube.cube.opener import fresh_group
from cmbcube.errors import param


def choices() -> dict:
    """Drop's choices and what each removes: the droppable products of the layout's table, read at call
    time (a product registered in :data:`cmbcube.cube.layout.PRODUCTS` is droppable at once)."""
    return {name: layout.PRODUCTS.get(name).description for name in layout.droppable()}


def run_products() -> tuple:
    """The products along the run axis, which ``--run`` applies to: pred, analysis, run."""
    return tuple(name for name in choices() if layout.PRODUCTS.get(name).run_axis)


def whole_arrays(product: str) -> tuple:
    """The arrays deleted whole when ``product`` is dropped (its main array first)."""
    return layout.product_arrays(product)


@dataclasses.dataclass
class DropReport:
    store: str
    product: str
    run: str | None
    removed: list                    # what went, in words
    bytes_before: int
    bytes_after: int
    notes: list = dataclasses.field(default_factory=list)

    @property
    def reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after


def refuse_unsafe(store: str, product: str, run, names, runs, force: bool, journal) -> None:
    """The refusals every kind of store makes before dropping anything (StoreError, exit 2): obs or cmb
    while products made from them remain (unless ``force``), and a ``run`` the store does not have
    (unless a run removal is being finished: ``journal``)."""
    if product in ("obs", "cmb") and product in names and not force:
        deps = dependants(store, product)
        if deps:
            raise StoreError(
                f"{store}: refusing to drop {product}: the store holds products made from it: {'; '.join(deps)}. "
                f"Drop those first (cmbcube drop {store} run, cmbcube drop {store} stats) or pass "
                f"{param('force', True)} to drop {product} anyway (they stay, but can no longer be recomputed or "
                "checked against it)")
    if product in ("pred", "analysis", "run") and run is not None and run not in runs and not journal:
        raise StoreError(f"{store}: no run {run!r}; runs present: {', '.join(runs) or 'none'}")


def dependants(store: str, product: str) -> list[str]:
    """What in the store was made from ``product`` (obs or cmb)."""
    group = fresh_group(store)
    names = set(group.array_keys())
    out = []
    runs = [str(r) for r in group["run"][...]] if "run" in names else []
    if runs:
        out.append(f"run(s) {', '.join(runs)} (predictions and trainings made from it)")
    stats = {"obs": "stats_obs", "cmb": "stats_cmb"}[product]
    if stats in names:
        out.append(f"{stats} (normalisation statistics)")
    if product == "cmb" and "metrics" in names and not runs:
        out.append("metrics and spectra (scored against it)")
    return out
