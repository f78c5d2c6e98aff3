"""The ``cmbcube`` command: one entry point, one subcommand per stage.

``COMMANDS`` is the command table: each name maps to its help line, the function adding its
options (``cmbcube.cli_args``) and its handler (``cmbcube.cli_handlers``). Adding a command is one
function in each of those modules plus one line here. ``main`` parses, looks the command up and
maps the errors: ``cmbcube.errors.InputError`` (bad input) -> exit 2, any other ``CmbcubeError``
-> exit 1 with its message (parameters written as this parser's options: ``cmbcube.cli_errors``),
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable

from cmbcube import __version__, cli_args as opts, cli_handlers as run
from cmbcube.cli_errors import for_cli
from cmbcube.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CmbcubeError, InputError


@dataclasses.dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]    # adds the command's options to its sub-parser
    handler: Callable[[argparse.Namespace], int]            # runs it; returns the exit status


COMMANDS: dict[str, Command] = {
    "simulate": Command("simulate a recipe into a store (resumes where it stopped)",
                        opts.simulate, run.dask_stage(run.simulate)),
    "preprocess": Command("normalisation statistics of the train split, stored in the cube",
                          opts.preprocess, run.dask_stage(run.preprocess)),
    "ilc": Command("NILC or HILC of a split, written as a run of the pred product",
                   opts.ilc, run.dask_stage(run.ilc)),
    "train": Command("train a network from the cube (checkpoints next to the store)", opts.train, run.train),
    "predict": Command("write a trained run's predictions into the cube", opts.predict, run.predict),
    "analyze": Command("metrics and power spectra of every run, stored in the cube",
                       opts.analyze, run.dask_stage(run.analyze)),
    "report": Command("tables and figures from the analysis", opts.report, run.report),
    "run": Command("the whole pipeline: simulate, preprocess, ilc, train, predict, analyze, report",
                   opts.run, run.dask_stage(run.pipeline)),
    "view": Command("PNG of any map in the cube", opts.view, run.view),
    "ingest-cmbml": Command("read a CMB-ML dataset tree (Simulation/Train/sim0000/...) into a store",
                            opts.ingest_cmbml, run.ingest_cmbml),         # --dry-run: its own (scans the tree)
    "export-cmbml": Command("write a store's finished sims as a CMB-ML tree (DIR/Simulation/...)",
                            opts.export_cmbml, run.dask_stage(run.export_cmbml)),
    "info": Command("summarise a store", opts.info, run.info),
    "tag": Command("name the current version of an Icechunk store (cite it; read it with --version)",
                   opts.tag, run.tag),
    "verify": Command("check every finished sim's and run's chunks exist and decode (crc32c)",
                      opts.verify, run.verify),
    "validate": Command("the store's physics next to outside references (CAMB, pysm3, Planck), pass/fail per check",
                        opts.validate, run.validate),
    "drop": Command("remove a product (e.g. one run) from a store to reclaim disk space", opts.drop, run.drop),
    "assets": Command("external files a recipe can use (pysm3 templates, Planck maps...), "
                      "present or not; --fetch downloads the missing ones", opts.assets, run.assets),
    "check-recipe": Command("validate a recipe and show what it plans, without running",
                            opts.check_recipe, run.check_recipe),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmbcube", description=(
        "Simulate Planck-like multi-frequency skies into one Zarr cube, clean the CMB out of them "
        "and score the results."))
    parser.add_argument("--version", action="version", version=f"cmbcube {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.help))
    return parser


def _os_error(err: OSError, text: str) -> int:
    """Disk full, permission denied, read-only file system outside a store transaction: exit 2."""
    where = err.filename or ""
    print(f"cmbcube: {where + ': ' if where else ''}{text}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv=None) -> int:
    from cmbcube.recipe import RecipeError
    parser = build_parser()
    args = parser.parse_args(argv)
    from cmbcube.progress import LogHandler
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", handlers=[LogHandler(sys.stderr)])
    if args.verbose < 2:
        for noisy in ("distributed", "numba", "pysm3", "healpy"):
            logging.getLogger(noisy).setLevel(logging.ERROR if args.verbose == 0 else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        if getattr(args, "store_version", None):           # read-only commands: STORE@VERSION
            from cmbcube.cube.icechunk_store import with_version
            args.store = with_version(args.store, args.store_version)
        return COMMANDS[args.command].handler(args)
    except RecipeError as err:
        print(f"cmbcube: recipe error: {for_cli(err, parser, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputError as err:           # bad input: the message names the field and the allowed values
        print(f"cmbcube: {for_cli(err, parser, args.command)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CmbcubeError as err:         # a failure cmbcube detected and explains; anything else is a bug
        print(f"cmbcube: {for_cli(err, parser, args.command)}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        import errno
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            return _os_error(err, for_cli(err, parser, args.command))
        raise


if __name__ == "__main__":
    sys.exit(main())
