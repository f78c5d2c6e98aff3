"""Versions of an Icechunk store people can cite (tags, branches, snapshots) and ``cmbcube verify``
on one: every finished unit's chunks read back through the read guard (present, crc32c, decodes).

``cmbcube tag STORE NAME`` tags the tip of the branch main (or ``STORE@VERSION``); reading a
version is ``cmbcube.open(STORE, version=NAME)``, ``STORE@NAME`` or ``--version NAME`` on the
read-only commands.  Tags are immutable: tagging an existing name is refused.
"""
from __future__ import annotations

import time

import numpy as np

from cmbcube.cube import icechunk_store as ics
from cmbcube.errors import param


def tag(path: str, name: str, message: str | None = None) -> dict:
    """Tag the snapshot ``path`` reads now (the branch main's tip, or ``path@VERSION``) as ``name``."""
    ics.check_version_name(name, "tag")
    repo = ics.repository(path)
    if name in repo.list_tags():
        raise ics.IcechunkError(f"{ics.parse(path).url}: tag {name!r} exists already (snapshot "
                                f"{repo.lookup_tag(name)}); tags never move: choose another name")
    if name in repo.list_branches():
        raise ics.IcechunkError(f"{ics.parse(path).url}: {name!r} is a branch; choose another tag name")
    snap = ics.snapshot_id(path)
    repo.create_tag(name, snap)
    info = repo.lookup_snapshot(snap)
    return {"tag": name, "snapshot": snap, "message": info.message, "written_at": info.written_at.isoformat()}


def versions(path: str) -> dict:
    """{"snapshot": id read now, "branches": {name: id}, "tags": {name: id}, "history": [(id, time, message)]}."""
    repo = ics.repository(path)
    snap = ics.snapshot_id(path)
    history = [(s.id, s.written_at.isoformat(timespec="seconds"), s.message)
               for s in repo.ancestry(snapshot_id=snap)]
    return {"snapshot": snap, "branches": {b: repo.lookup_branch(b) for b in sorted(repo.list_branches())},
            "tags": {t: repo.lookup_tag(t) for t in sorted(repo.list_tags())}, "history": history}


def summary_lines(path: str) -> list[str]:
    """``cmbcube info`` lines of an Icechunk store: the snapshot read, branches, tags, last commits."""
    v = versions(path)
    lines = [f"  snapshot    {v['snapshot']} (Icechunk; {ics.parse(path).version or ics.BRANCH})"]
    lines.append("  branches    " + ", ".join(f"{b} {s}" for b, s in v["branches"].items()))
    lines.append("  tags        " + (", ".join(f"{t} {s}" for t, s in v["tags"].items()) or "none"))
    for snap, when, message in v["history"][:5]:
        lines.append(f"  commit      {snap} {when} {message}")
    if len(v["history"]) > 5:
        lines.append(f"  ...         {len(v['history']) - 5} older commit(s)")
    return lines


def verify(path: str, products=None, clear: bool = False, progress: bool | None = None):
    """``cmbcube verify`` on an Icechunk store: each flagged unit's products read back through the guard
    (a missing or corrupted chunk raises DamagedUnitError naming the unit).  ``clear`` clears the
    damaged units' done-flags in one commit.  Returns cmbcube.cube.verify_report.VerifyReport."""
    from cmbcube.cube import layout
    from cmbcube.cube.location import require_store
    from cmbcube.cube.opener import read_group
    from cmbcube.cube.shardread import DamagedUnitError
    from cmbcube.cube.verify_report import Damage, VerifyReport
    from cmbcube.errors import InputError
    from cmbcube.progress import bar as progress_bar
    from cmbcube.recipe import SPLITS
    require_store(path)
    t0 = time.perf_counter()
    report = VerifyReport(path)
    group = read_group(path)
    names = set(group.array_keys())
    every = layout.unit_products()
    if products:
        unknown = [p for p in products if p not in every or p not in names]
        if unknown:
            raise InputError(f"{param('products')} {','.join(unknown)}: not in {path}; present: "
                             f"{', '.join(p for p in every if p in names)}")
    runs = [str(r) for r in group["run"][...]] if "run" in names else []
    jobs = []
    for level, flag in (("sim", "sim_done"), ("pred", "pred_done"), ("analysis", "analysis_done")):
        if flag not in names:
            continue
        prods = [p for p in layout.unit_products(flag) if p in names and (not products or p in products)]
        for index in zip(*np.nonzero(np.asarray(group[flag][...]) == 1)):
            index = tuple(int(i) for i in index)
            unit = (SPLITS[index[0]], index[1]) if level == "sim" else (runs[index[0]], SPLITS[index[1]], index[2])
            jobs += [(level, unit, index, p) for p in prods]
    report.units = len({(level, unit) for level, unit, _, _ in jobs})
    bar = progress_bar(len(jobs), "verify", unit="chunk", progress=progress, where=f"{path} (read only)")
    try:
        for level, unit, index, name in jobs:
            arr = group[name]
            try:
                block = np.asarray(arr[index])
                report.files += 1
                report.bytes_read += block.nbytes
            except DamagedUnitError as err:
                report.damage.append(Damage(level, unit, name, "", str(err).splitlines()[0]))
            except Exception as err:  # noqa: BLE001 - any decoding failure is damage
                report.damage.append(Damage(level, unit, name, "", f"does not decode: {type(err).__name__}: {err}"))
            bar.update(1)
    finally:
        bar.close()
    if clear and report.damage:
        _clear(path, report, runs)
        report.cleared = True
    report.seconds = time.perf_counter() - t0
    return report


def _clear(path, report, runs) -> None:
    from cmbcube.cube.runs import clear_run_done
    from cmbcube.cube.sims import clear_done
    for split, sim in report.units_at("sim"):
        clear_done(path, split, sim)
    for run, split, sim in report.units_at("pred"):
        clear_run_done(path, runs.index(run), split, sim)
    for run, split, sim in report.units_at("analysis"):
        clear_run_done(path, runs.index(run), split, sim, analysis_only=True)
    if ics.handles(path):                        # plain object storage: the flags are written already
        ics.commit(path, f"verify --clear: {len(report.damage)} damaged unit(s) to rebuild", {"stage": "verify"})
