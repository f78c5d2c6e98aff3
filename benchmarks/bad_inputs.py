"""Every bad input of issue 21 tried through the real command line: what each gets.

Run from the repository root::

    python benchmarks/bad_inputs.py                  # prints the table, writes benchmarks/results/bad_inputs_DATE.md
    python benchmarks/bad_inputs.py --write-docs     # also replaces the table in docs/reliability.md

It builds a tiny store (the quickstart recipe at nside 32, 4 sims, one NILC run and one
1-epoch training), then runs each case as a user would (the CLI in a fresh process, cwd a
scratch directory) and records the exit code, the first line the command printed on
stderr (stdout where stderr is empty), whether a Python traceback reached the user, and whether every store
it could touch is byte-for-byte the same afterwards (a hash of every file under the store
and its `.runs` folder, taken before and after).  A case passes when the exit code is the
expected one, no traceback is printed and the stores are unchanged.  Takes 3-5 minutes on
2 cores, most of it Python start-up.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"
TINY = ["--set", "nside=32", "--set", "splits={train: 2, valid: 1, test: 1}", "--set", "cluster.kind=synchronous"]

# a typed field (description: text) holding a mapping of 10 anchors, each 9 aliases of the one before:
# 9**10 (3.5e9) strings once expanded
ALIAS_BOMB = "name: bomb\nseed: 1\nnside: 16\ndescription:\n" + "\n".join(
    ['  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "\n"


@dataclass
class Case:
    item: str                      # the item number
    what: str                      # what the user did, in words
    argv: list                     # cmbcube arguments; {S} the store, {R} the tiny recipe, {T} a scratch dir
    expect: int = 2
    setup: str = ""                # a damage applied to a copy of the store first (see damage())
    prefix: list = field(default_factory=list)


CASES = [
    Case("1", "ILC on a mistyped store path", ["ilc", "{S}x", "--method", "nilc"]),
    Case("1", "analyze on a mistyped store path", ["analyze", "{S}x"]),
    Case("1", "train on a mistyped store path", ["train", "{S}x", "--model", "cmbnncs-unet5", "--epochs", "1"]),
    Case("1", "predict on a mistyped store path", ["predict", "{S}x", "--run", "cmbnncs-unet5"]),
    Case("2", "train again a run that is finished", ["train", "{S}", "--model", "cmbnncs-unet5", "--epochs", "1"]),
    Case("3", "dry run of CMB-ML at nside 512 on this machine", ["run", "recipes/cmb-ml-512.yaml", "--store",
                                                                   "{T}/big.zarr", "--dry-run"]),
    Case("4", "noise scale infinite", ["simulate", "{R}", "--store", "{T}/n.zarr", "--set", "noise.scale=.inf"]),
    Case("4", "noise scale NaN", ["simulate", "{R}", "--store", "{T}/n.zarr", "--set", "noise.scale=.nan"]),
    Case("4", "a beam override NaN", ["simulate", "{R}", "--store", "{T}/n.zarr", "--set",
                                      "instrument.beam_overrides.143=.nan"]),
    Case("4", "target beam NaN", ["check-recipe", "{R}", "--set", "cmb.target_beam_arcmin=.nan"]),
    Case("4", "prior width infinite", ["check-recipe", "{R}", "--set", "cmb.prior_width=.inf"]),
    Case("5", "a YAML alias bomb (9 nested anchors) in a recipe", ["check-recipe", "{T}/bomb.yaml"]),
    Case("6", "lens_potential_accuracy 1000000", ["check-recipe", "{R}", "--set",
                                                  "cmb.lens_potential_accuracy=1000000"]),
    Case("6", "map2alm_iterations 100000000", ["check-recipe", "{R}", "--set",
                                               "instrument.map2alm_iterations=100000000"]),
    Case("6", "zstd level 1000", ["check-recipe", "{R}", "--set", "storage.compression=zstd", "--set",
                                  "storage.level=1000"]),
    Case("6", "blosc-lz4 level 50", ["check-recipe", "{R}", "--set", "storage.compression=blosc-lz4", "--set",
                                     "storage.level=50"]),
    Case("6", "analysis f_sky 7", ["check-recipe", "{R}", "--set", "pipeline.f_sky=7"]),
    Case("7", "verify with obs/zarr.json truncated", ["verify", "{S}"], expect=1, setup="truncate"),
    Case("7", "simulate into a store with obs/zarr.json truncated", ["simulate", "{R}", "--store", "{S}"],
         setup="truncate"),
    Case("10", "a malformed --set value", ["check-recipe", "{R}", "--set", "splits={train: [1"]),
    Case("10", "a store in a folder nobody may write (chattr +i: root too)", ["simulate", "{R}", "--store",
                                                                             "{T}/locked/x.zarr"], setup="immutable"),
    Case("10", "a store name of 300 characters", ["simulate", "{R}", "--store", "{T}/" + "s" * 295 + ".zarr"]),
    Case("10", "no network at all, local Dask cluster", ["simulate", "{R}", "--store", "{T}/offline.zarr",
                                                         "--set", "cluster.kind=local"], prefix=["unshare", "-n"]),
    Case("12", "view a detector the store lacks", ["view", "{S}", "--detector", "150", "--out", "{T}/v.png"]),
    Case("12", "view a run the store lacks", ["view", "{S}", "--product", "pred", "--run", "nosuch",
                                              "--out", "{T}/v.png"]),
    Case("23", "a version of a plain Zarr store", ["info", "{S}", "--version", "v1"]),
    Case("23", "an Icechunk location with an unknown scheme", ["info", "icechunk+ftp://bucket/x"]),
    Case("-", "an ILC method that does not exist", ["ilc", "{S}", "--method", "milc"]),
    Case("-", "predict a run never trained", ["predict", "{S}", "--run", "nosuch"]),
    Case("-", "drop a run that is not there", ["drop", "{S}", "run", "--run", "nosuch"]),
    Case("-", "a recipe file that does not exist", ["check-recipe", "{T}/nosuch.yaml"]),
    Case("-", "an nside that is not a power of 2", ["check-recipe", "{R}", "--set", "nside=17"]),
    Case("-", "a detector Planck does not have", ["check-recipe", "{R}", "--set", "detectors=[30, 150]"]),
    Case("-", "an unknown recipe field", ["check-recipe", "{R}", "--set", "noise.colour=pink"]),
]


def tree_hash(*paths) -> str:
    digest = hashlib.sha256()
    for top in paths:
        if not os.path.exists(top):
            continue
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, top).encode())
                digest.update(Path(full).read_bytes())
    return digest.hexdigest()


def cli(args, cwd, prefix=(), timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CMBCUBE_SHT_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([*prefix, sys.executable, "-c", "import sys; from cmbcube.cli import main; sys.exit(main())",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - start


def build_store(scratch: Path) -> tuple[str, str]:
    recipe = scratch / "tiny.yaml"
    text = (ROOT / "recipes" / "quickstart.yaml").read_text()
    recipe.write_text(text)
    store = str(scratch / "tiny.zarr")
    steps = [["simulate", str(recipe), "--store", store, *TINY, "--no-progress"],
             ["preprocess", store, "--scheduler", "synchronous", "--no-progress"],   # the robust transform's statistics
             ["ilc", store, "--method", "nilc", "--scheduler", "synchronous", "--no-progress"],
             ["train", store, "--model", "cmbnncs-unet5", "--epochs", "1", "--no-progress"]]
    for step in steps:
        proc, _ = cli(step, scratch)
        if proc.returncode != 0:
            sys.exit(f"building the tiny store failed at {step[0]}:\n{proc.stderr}")
    # the recipe the cases use: the tiny one, as a file (the cases add their own --set)
    small = scratch / "small.yaml"
    small.write_text(text + "\n")
    return store, str(small)


def damage(kind: str, store: str):
    if kind == "immutable":                   # a folder that cannot be written in, whoever you are
        locked = Path(store).parent / "locked"
        locked.mkdir()
        subprocess.run(["chattr", "+i", str(locked)], check=False)
    elif kind == "truncate":
        meta = Path(store) / "obs" / "zarr.json"
        meta.write_bytes(meta.read_bytes()[:100])


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("usage:"):         # argparse: the error is on its last line
        lines = [ln for ln in lines if ": error: " in ln] or lines
    tail = [ln for ln in lines if not ln.startswith(("warnings.warn", "/"))]
    lines = tail or lines or ["(nothing)"]
    line = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")   # the reason follows
    return line if len(line) <= 220 else line[:217] + "..."


def run_case(case: Case, base: str, recipe: str, scratch: Path) -> dict:
    work = Path(tempfile.mkdtemp(dir=scratch))
    store = str(work / "tiny.zarr")
    shutil.copytree(base, store)
    if os.path.isdir(base + ".runs"):
        shutil.copytree(base + ".runs", store + ".runs")
    (work / "bomb.yaml").write_text(ALIAS_BOMB)
    if case.setup:
        damage(case.setup, store)
    before = tree_hash(store, store + ".runs")
    args = [a.replace("{S}", store).replace("{R}", recipe).replace("{T}", str(work)) for a in case.argv]
    args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]     # the repository's recipes
    if case.argv[0] in ("simulate", "check-recipe", "run") and "{R}" in case.argv:
        args = args[:2] + TINY[:4] + args[2:]            # the tiny shape first: the case's --set win
    prefix = case.prefix
    if prefix and shutil.which(prefix[0]) is None:
        return dict(case=case, code=None, line=f"skipped: {prefix[0]} not found", traceback=False, same=True,
                    seconds=0.0, ok=None)
    try:
        proc, seconds = cli(args, work, prefix=prefix, timeout=120)
        code, err = proc.returncode, proc.stderr or proc.stdout      # verify reports on stdout
    except subprocess.TimeoutExpired:
        code, err, seconds = None, "killed: still running after 120 s", 120.0
    same = tree_hash(store, store + ".runs") == before
    if case.setup in ("", "immutable") and case.argv[0] in ("simulate", "run"):
        created = [p for p in work.rglob("*.zarr") if p.name != "tiny.zarr"]
        same = same and not created                       # a refused run leaves nothing behind
    if (work / "locked").exists():
        subprocess.run(["chattr", "-i", str(work / "locked")], check=False)
    traceback = "Traceback (most recent call last)" in err
    ok = code == case.expect and not traceback and same
    shutil.rmtree(work, ignore_errors=True)
    line = first_line(err).replace(str(work) + "/", "").replace(str(work), ".")
    return dict(case=case, code=code, line=line, traceback=traceback, same=same, seconds=seconds, ok=ok)


def table(rows) -> str:
    out = ["| item | what the user does | exit | what it says (first line) | traceback | stores unchanged | ok |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["case"]
        cmd = " ".join(c.prefix + ["cmbcube"] + [a if len(a) < 40 else a[:20] + "..." for a in c.argv])
        line = r["line"].replace("|", "\\|")
        ok = "skipped" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        out.append(f"| {c.item} | {c.what}: `{cmd}` | {r['code']} (want {c.expect}) | {line} | "
                   f"{'**yes**' if r['traceback'] else 'no'} | {'yes' if r['same'] else '**no**'} | {ok} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", "--write-readme", dest="write_docs", action="store_true",
                        help="replace the bad-input table in docs/reliability.md (--write-readme: the old name, "
                             "from when the table was in README.md)")
    parser.add_argument("--only", default="", help="run only the cases whose item is in this comma list")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cmbcube-bad-"))
    try:
        t0 = time.perf_counter()
        base, recipe = build_store(scratch)
        print(f"tiny store built in {time.perf_counter() - t0:.0f} s", flush=True)
        cases = [c for c in CASES if not args.only or c.item in args.only.split(",")]
        rows = []
        for case in cases:
            row = run_case(case, base, recipe, scratch)
            rows.append(row)
            print(f"[{case.item:>2}] {case.what}: exit {row['code']} ({row['seconds']:.1f} s) "
                  f"{'ok' if row['ok'] else 'NOT OK' if row['ok'] is not None else 'skipped'}: {row['line']}",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    date = datetime.date.today().isoformat()
    good = sum(1 for r in rows if r["ok"])
    head = (f"Generated by `python benchmarks/bad_inputs.py` on {date}, git {git_head()}: "
            f"{good} of {len(rows)} cases as wanted.")
    text = head + "\n\n" + table(rows) + "\n"
    print("\n" + text)
    if not args.only:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"bad_inputs_{date}.md").write_text(text)
    if args.write_docs:
        page = ROOT / "docs" / "reliability.md"
        s = page.read_text()
        if BEGIN not in s or END not in s:
            sys.exit(f"docs/reliability.md has no {BEGIN} ... {END} block")
        before, rest = s.split(BEGIN, 1)
        page.write_text(before + BEGIN + "\n" + text + END + rest.split(END, 1)[1])
    sys.exit(0 if good == len([r for r in rows if r["ok"] is not None]) else 1)


def git_head() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+changes" if dirty else "")


if __name__ == "__main__":
    main()
