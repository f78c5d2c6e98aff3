"""The exceptions cmbcube raises on purpose, with one base class.

``CmbcubeError`` is every failure cmbcube detects and explains itself. ``InputError`` is the
part of it that the user can fix by changing what they passed (a recipe field, a store path, an
option, a damaged or mismatched store): the command line prints its message and exits with
status 2. Any other ``CmbcubeError`` exits with status 1 and its message; anything else is a bug
and keeps its traceback.

InputError also derives from ValueError (and StoreError from RuntimeError) so that code catching
the built-in classes keeps working.

Messages name parameters, not command-line options: the layers below the command line write
``param("f_sky")`` (or ``command("drop", store, "run", run=name)`` for a whole command) into the
message. ``str(err)`` reads ``f_sky`` (``drop('s', 'run', run='nilc')``) for a Python caller; the
command line renders the same message with its own option, ``--f-sky`` (``cmbcube drop s run --run
nilc``), found in its argparse parser (``cmbcube.cli_errors``), so no layer below it spells a flag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

# a marked parameter or command inside a message: JSON between two control characters (JSON escapes
# control characters, so a value holding them cannot end a mark early)
_OPEN, _CLOSE = "\x1e", "\x1f"
_MARK = re.compile(f"{_OPEN}({{[^{_OPEN}{_CLOSE}]*}}){_CLOSE}")
_UNSET = object()


def param(name: str, value=_UNSET, *, dest: str | None = None, width: int = 0) -> str:
    """Parameter ``name`` inside an error message, optionally with its value.

    A Python caller reads ``name`` (``name=value``); the command line prints its option for the
    parameter instead (``--name-as-flag value``; a value of True prints the flag alone), so
    ``param("resume", True)`` reads ``resume=True`` or ``--resume``. A string value is shown as given.
    ``dest``: the command line's name for it where the Python one differs (``run_name`` -> ``run``);
    ``width``: padded with spaces to that many characters (a column of choices).
    """
    mark = {"p": name, "d": dest or name, "w": width}
    if value is not _UNSET:
        mark["v"] = value if isinstance(value, str | bool) else str(value)
    return _OPEN + json.dumps(mark) + _CLOSE


def command(verb: str, *args, **options) -> str:
    """A cmbcube command inside an error message (advice: what to run next).

    A Python caller reads the stage call ``verb('a', b=1)``; the command line prints
    ``cmbcube verb a --b 1`` with the command's own options (True: the flag alone; ``...``: the
    option without a value, ``b=...`` in Python).
    """
    mark = {"c": verb, "a": [str(a) for a in args],
            "o": {k: "..." if v is ... else v if isinstance(v, str | bool) else str(v) for k, v in options.items()},
            "e": [k for k, v in options.items() if v is ...]}
    return _OPEN + json.dumps(mark) + _CLOSE


def render(text: str, flag: Callable[[str, str | None], str | None] = lambda name, verb: None) -> str:
    """``text`` with its marks written out: through ``flag(name, verb)`` (the option spelling of a
    parameter, None where there is none) for the command line, in Python words without it."""
    def one(match) -> str:
        try:
            mark = json.loads(match[1])
        except ValueError:              # not a mark: the separators came with a value (a path, a name)
            return match[0]
        if "c" in mark:
            return _command(mark["c"], mark["a"], mark["o"], mark["e"], flag)
        option = flag(mark["d"], None)
        return _word(mark["p"], mark.get("v", _UNSET), option).ljust(mark["w"])
    return _MARK.sub(one, text)


def _word(name: str, value, option: str | None) -> str:
    if option is None:
        return name if value is _UNSET else f"{name}={value}"
    if value is _UNSET or value is True:
        return option
    return f"{option} {value}"


def _command(verb: str, args: list, options: dict, bare: list, flag) -> str:
    spelled = {k: flag(k, verb) for k in options}
    if None in spelled.values():                  # the Python call (no command line, or an option it lacks)
        words = [repr(a) for a in args] + [f"{k}={'...' if k in bare else repr(v)}" for k, v in options.items()]
        return f"{verb.replace('-', '_')}({', '.join(words)})"
    words = ["cmbcube", verb, *args] + [_word(k, True if k in bare else v, spelled[k]) for k, v in options.items()]
    return " ".join(words)


def os_error(code: int, message: str, filename=None) -> OSError:
    """``OSError(code, message, filename)`` for a message holding marks: ``strerror`` in Python words,
    the marked message kept in ``template`` for the command line."""
    err = OSError(code, render(message), filename)
    err.template = message
    return err


class CmbcubeError(Exception):
    """A failure cmbcube detected and can explain.

    A message holding ``param``/``command`` marks is kept whole in ``template`` (the command line
    renders it with its options); ``args[0]`` and ``str(err)`` are the Python words.
    """

    def __init__(self, *args):
        self.template = args[0] if args and isinstance(args[0], str) and _OPEN in args[0] else None
        if self.template is not None:
            args = (render(self.template), *args[1:])
        super().__init__(*args)
        self.args = args


class InputError(CmbcubeError, ValueError):
    """Bad input: the message names the bad field or path and the allowed values (exit status 2)."""


EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class MissingFileError(InputError, FileNotFoundError):
    """An input file or directory the user named (or a recipe points at) does not exist (exit status 2)."""
