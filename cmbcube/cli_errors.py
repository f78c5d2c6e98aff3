"""Error messages in command-line words: each parameter a message names becomes its option.

The layers below the command line name parameters (``cmbcube.errors.param``) and commands
(``cmbcube.errors.command``); ``for_cli`` writes them as the options of the argparse parser that
``cmbcube.cli`` built, read from the parser itself (an option's ``dest`` -> its option string), so
the pairing is written once, where the option is defined. A parameter is looked up in the running
command's options first, then the other commands', then the program's; a positional argument
prints as its metavar (``STORE``); a name no parser has keeps its Python spelling.
"""
from __future__ import annotations

import argparse

from cmbcube.errors import render


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:                      # argparse lists its actions nowhere else
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _spellings(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> how the command line writes it: the first long option, else the first option, else
    the positional argument's metavar (or its dest in capitals)."""
    out: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction) or action.dest in out:
            continue
        if action.option_strings:
            longs = [o for o in action.option_strings if o.startswith("--")]
            out[action.dest] = (longs or action.option_strings)[0]
        elif isinstance(action.metavar, str) or action.metavar is None:
            out[action.dest] = action.metavar or action.dest.upper()
    return out


def flags(parser: argparse.ArgumentParser, command: str | None):
    """``flag(name, verb)``: the option spelling of parameter ``name`` for command ``verb`` (the
    running ``command`` when verb is None), None where no command has it."""
    commands = _commands(parser)
    tables = {name: _spellings(sub) for name, sub in commands.items()}
    program = _spellings(parser)

    def flag(name: str, verb: str | None) -> str | None:
        if verb is not None:                # a command named in advice: only its own options will do
            return tables.get(verb, {}).get(name)
        order = [tables.get(command or "", {})] + [t for v, t in tables.items() if v != command] + [program]
        return next((t[name] for t in order if name in t), None)
    return flag


def for_cli(err: BaseException, parser: argparse.ArgumentParser, command: str | None) -> str:
    """The message of ``err`` as the command line prints it (of an OSError: its ``strerror``)."""
    template = getattr(err, "template", None)
    if template is None:
        return (err.strerror or str(err)) if isinstance(err, OSError) else str(err)
    return render(template, flags(parser, command))
