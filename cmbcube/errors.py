"""The exceptions cmbcube raises on purpose, with one base class.

``CmbcubeError`` is every failure cmbcube detects and explains itself. ``InputError`` is the
part of it that the user can fix by changing what they passed (a recipe field, a store path, an
option, a damaged or mismatched store): the command line prints its message and exits with
status 2. Any other ``CmbcubeError`` exits with status 1 and its message; anything else is a bug
and keeps its traceback.

InputError also derives from ValueError (and StoreError from RuntimeError) so that code catching
the built-in classes keeps working.
"""

from __future__ import annotations


class CmbcubeError(Exception):
    """A failure cmbcube detected and can explain."""


class InputError(CmbcubeError, ValueError):
    """Bad input: the message names the bad field or path and the allowed values (exit status 2)."""


EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class MissingFileError(InputError, FileNotFoundError):
    """An input file or directory the user named (or a recipe points at) does not exist (exit status 2)."""
