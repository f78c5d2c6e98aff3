"""The ``cmbcube`` command: one entry point, one subcommand per stage.

``COMMANDS`` is the command table: each name maps to its help line, the function adding its
options (``cmbcube.cli_args``), its handler (``cmbcube.cli_handlers``: prints what was done) and,
for a stage, the stage module whose ``run(...) -> StageReport`` does the work (``"simulate"``:
``cmbcube.stages.simulate.run``, imported only when the command runs). Adding a command is one
function in each of those modules plus one line here. ``main`` parses, looks the command up and
maps the errors: ``cmbcube.errors.InputError`` (bad input) -> exit 2, any other ``CmbcubeError``
-> exit 1 with its message (parameters written as this parser's options: ``cmbcube.cli_errors``),
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Callable

from cmbcube import __version__, cli_args as opts, cli_handlers as handlers
from cmbcube.cli_errors import for_cli
from cmbcube.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CmbcubeError, InputError


@dataclasses.dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]    # adds the command's options to its sub-parser
    handler: Callable[..., int]             # handler(args, run) for a stage, else handler(args): the exit status
    stage: str | None = None                # cmbcube.stages.<stage>.run(...) -> StageReport does the work
    plans: bool = False                     # takes the cluster options: --dry-run prints the plan instead

    def run(self) -> Callable | None:
        """The stage's ``run`` function (its module imported now), or None for a command without a stage."""
        return None if self.stage is None else importlib.import_module(f"cmbcube.stages.{self.stage}").run

    def __call__(self, args: argparse.Namespace) -> int:
        if self.plans and args.dry_run:
            return handlers.dry_run(args)
        return self.handler(args) if self.stage is None else self.handler(args, self.run())


COMMANDS: dict[str, Command] = {
    "simulate": Command("simulate a recipe into a store (resumes where it stopped)",
                        opts.simulate, handlers.simulate, "simulate", plans=True),
    "preprocess": Command("normalisation statistics of the train split, stored in the cube",
                          opts.preprocess, handlers.preprocess, "preprocess", plans=True),
    "ilc": Command("NILC or HILC of a split, written as a run of the pred product",
                   opts.ilc, handlers.ilc, "ilc", plans=True),
    "train": Command("train a network from the cube (checkpoints next to the store)",
                     opts.train, handlers.train, "train"),
    "predict": Command("write a trained run's predictions into the cube", opts.predict, handlers.predict, "predict"),
    "analyze": Command("metrics and power spectra of every run, stored in the cube",
                       opts.analyze, handlers.analyze, "analyze", plans=True),
    "report": Command("tables and figures from the analysis", opts.report, handlers.report, "report"),
    "run": Command("the whole pipeline: simulate, preprocess, ilc, train, predict, analyze, report",
                   opts.run, handlers.pipeline, "pipeline", plans=True),
    "view": Command("PNG of any map in the cube", opts.view, handlers.view, "view"),
    "ingest-cmbml": Command("read a CMB-ML dataset tree (Simulation/Train/sim0000/...) into a store",
                            opts.ingest_cmbml, handlers.ingest_cmbml, "ingest"),   # --dry-run: its own (scans the tree)
    "export-cmbml": Command("write a store's finished sims as a CMB-ML tree (DIR/Simulation/...)",
                            opts.export_cmbml, handlers.export_cmbml, "export", plans=True),
    "info": Command("summarise a store", opts.info, handlers.info),
    "tag": Command("name the current version of an Icechunk store (cite it; read it with --version)",
                   opts.tag, handlers.tag),
    "verify": Command("check every finished sim's and run's chunks exist and decode (crc32c)",
                      opts.verify, handlers.verify),
    "validate": Command("the store's physics next to outside references (CAMB, pysm3, Planck), pass/fail per check",
                        opts.validate, handlers.validate, "validate"),
    "drop": Command("remove a product (e.g. one run) from a store to reclaim disk space", opts.drop, handlers.drop),
    "assets": Command("external files a recipe can use (pysm3 templates, Planck maps...), "
                      "present or not; --fetch downloads the missing ones", opts.assets, handlers.assets),
    "check-recipe": Command("validate a recipe and show what it plans, without running",
                            opts.check_recipe, handlers.check_recipe),
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
        return COMMANDS[args.command](args)
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
