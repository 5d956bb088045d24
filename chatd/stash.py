"""Typed per-plugin state on shared objects (clients, rooms), pytest-style.

A plugin never sets attributes on a :class:`chatd.Client`; it keeps its state
under its own key::

    AWAY = StashKey[str]()

    client.stash[AWAY] = "gone fishing"
    reason = client.stash.get(AWAY)   # None if not set, like dict.get

Keys are objects, not strings, so two plugins cannot collide by accident.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key for :class:`Stash`; create one per piece of state, at module level."""

    __slots__ = ()


_EMPTY: dict[Any, object] = {}  # never written to: see Stash.__init__


class Stash:
    """A mapping from :class:`StashKey` to values of the key's type."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        # Every stash starts on one shared empty dict and gets its own on the first
        # write: most clients' stashes stay empty, and 10,000 empty dicts are 640 KB.
        self._data: dict[StashKey[Any], object] = _EMPTY

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        if self._data is _EMPTY:
            self._data = {}
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StashKey[T], default: D | None = None) -> T | D | None:
        """The value for ``key``, or ``default`` (None) if there is none, like ``dict.get``."""
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: StashKey[T], default: T) -> T:
        try:
            return self[key]
        except KeyError:
            self[key] = default
            return default

    def pop(self, key: StashKey[T], default: D | None = None) -> T | D | None:
        """Remove ``key`` and return its value, or ``default`` (None) if there is none."""
        if self._data is _EMPTY:
            return default
        return cast("T | D | None", self._data.pop(key, default))

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
