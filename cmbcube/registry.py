"""Named extension points: one table per kind of thing a contributor can add.

A registry maps a name (what a recipe or a command line says) to an entry (whatever the
consumers need: a builder, a spec dataclass...). Recipe validation, the command-line choices,
``drop`` and ``verify`` read the registries, so adding a component, an ILC method, a network or a
stored product is one new file plus one ``register`` call.

The registries themselves live next to what they hold:

- ``cmbcube.science.foregrounds.COMPONENTS``  synthetic foreground components
- ``cmbcube.science.ilc.METHODS``             ILC variants
- ``cmbcube.networks.NETWORKS``               networks
- ``cmbcube.cube.layout.PRODUCTS``            stored products
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cmbcube.errors import InputError


class Registry:
    """An ordered name -> entry table whose unknown-name error lists the allowed names."""

    def __init__(self, kind: str, field: str):
        self.kind = kind            # e.g. "foreground component"
        self.field = field          # the recipe field or option naming it, e.g. "foregrounds.components"
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None, *, replace: bool = False) -> Any:
        """Add ``entry`` under ``name``; without an entry, return a decorator that registers its argument."""
        if entry is None:
            def decorate(obj: Callable) -> Callable:
                self.register(name, obj, replace=replace)
                return obj
            return decorate
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} names are non-empty strings, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register toys clean up with this)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, name: str) -> Any:
        """The entry for ``name``; an unknown name raises InputError naming the field and the allowed names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise InputError(f"{self.field}: unknown {self.kind} {name!r}; allowed: "
                             f"{', '.join(self._entries) or '(none registered)'}") from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
