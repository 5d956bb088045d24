"""No module reads or writes another module's private attributes.

A name with a leading underscore is its module's own business (PEP 8: "weak
internal use indicator").  A module that reaches into another's -- the domain
reading ``client._gate``, a protocol writing ``transport.limit_hit``, a
built-in reading ``client._stash`` -- ties the two together where nobody looks,
and a Redis backend or an IRC protocol cannot plug in without knowing it.  Each
neighbour gets a method or a public field of a record it owns instead
(docs/architecture.md, "The seams").

The check reads every module's syntax tree, not its text (docstrings and
comments may name privates).  An attribute ``x._name`` -- read, written or
deleted, or through ``getattr``/``setattr``/``hasattr``/``delattr`` with a
literal name -- on anything but ``self`` or ``cls`` must be one the module
defines itself: assigned as ``self._name``/``cls._name``, listed in a
``__slots__``, or a method, nested class or class attribute of one of its
classes.  So the helpers of one module may share its privates (the reactor's
wake-up handler calls the reactor's ``_dispatch_signals``), and another module
may not; ``from chatd.x import _name`` is reading another module's private too.
Dunder names are public protocol, not private.

The allow-list is short and each entry says why: underscore names the standard
library documents as public, and two standard-library internals chatd uses on
purpose.  It names the expression and (for the internals) the file, so a new
use anywhere else is caught.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Where the rule holds: the package, and the example plugins (which use the public
#: API only, like any third-party plugin).
SCANNED = ("chatd", "plugins")

#: Underscore names the standard library documents as public API, allowed anywhere.
DOCUMENTED = {
    "os._exit": "documented: exit without cleanup (the forked child, a second Ctrl-C)",
    "sys._getframe": "documented (CPython): the caller's module, for a plugin's timer owner",
}

#: Standard-library internals, allowed only where they are used now, with the reason.
INTERNALS = {
    ("chatd/listeners.py", "sock._accept"): (
        "socket.socket._accept returns the bare fd: accepting a burst makes no socket "
        "object that would be thrown away at once (the accept path is hot)"
    ),
    ("chatd/logsetup.py", "listener._thread"): (
        "logging.handlers.QueueListener has no bounded stop(): the shutdown waits for "
        "its thread with a timeout, so a stuck handler cannot hang the exit"
    ),
    ("chatd/logsetup.py", "listener._sentinel"): (
        "the same bounded stop: the sentinel QueueListener.stop() would enqueue"
    ),
    ("chatd/transport/tls.py", "getattr(ssl, '_ssl')"): (
        "the standard library decodes a certificate file only through a private helper "
        "(the expiry check before a start); where it is missing, the check is skipped"
    ),
    ("chatd/transport/tls.py", "getattr(getattr(ssl, '_ssl', None), '_test_decode_cert')"): (
        "the same helper, _ssl._test_decode_cert"
    ),
}

_ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _slot_names(value: ast.expr) -> Iterator[str]:
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        yield value.value
    elif isinstance(value, (ast.Tuple, ast.List, ast.Set)):
        for element in value.elts:
            yield from _slot_names(element)


def owned_names(tree: ast.AST) -> set[str]:
    """The private attribute names a module defines itself."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    for target in targets:
                        if isinstance(target, ast.Name):
                            names.add(target.id)
                            if target.id == "__slots__" and item.value is not None:
                                names.update(_slot_names(item.value))
        elif (isinstance(node, ast.Attribute) and _is_self(node.value)
              and isinstance(node.ctx, ast.Store)):
            names.add(node.attr)
    return {name for name in names if _private(name)}


def _package_of(path: str) -> list[str]:
    parts = path.removesuffix(".py").split("/")
    return parts if parts[-1] == "__init__" else parts[:-1]


def _imported_module(node: ast.ImportFrom, path: str) -> str:
    if not node.level:
        return node.module or ""
    package = _package_of(path)
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    parts = [p for p in base if p != "__init__"]
    return ".".join([*parts, node.module] if node.module else parts)


def violations(source: str, path: str, *, allow: bool = True) -> list[str]:
    """Every place in ``source`` (the module at ``path``, relative to the repository)
    that reads or writes another module's private attribute (``allow=False``: the
    allow-listed ones too)."""
    tree = ast.parse(source, path)
    owned = owned_names(tree)
    found: list[str] = []

    def check(node: ast.AST, obj: ast.expr, name: str, shown: str) -> None:
        if not _private(name) or _is_self(obj) or name in owned:
            return
        if allow and (shown in DOCUMENTED or (path, shown) in INTERNALS):
            return
        found.append(f"{path}:{node.lineno}: {shown}")  # type: ignore[attr-defined]

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            check(node, node.value, node.attr, f"{ast.unparse(node.value)}.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in _ACCESSORS and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            name = node.args[1].value
            shown = f"{node.func.id}({ast.unparse(node.args[0])}, {name!r})"
            check(node, node.args[0], name, shown)
        elif isinstance(node, ast.ImportFrom):
            module = _imported_module(node, path)
            if module.split(".")[0] not in ("chatd", "plugins"):
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path}:{node.lineno}: from {module} import {alias.name}")
    return found


def _modules() -> Iterator[tuple[str, str]]:
    for top in SCANNED:
        for file in sorted((REPO / top).rglob("*.py")):
            path = file.relative_to(REPO).as_posix()
            yield path, file.read_text(encoding="utf-8")


def test_no_module_reads_or_writes_another_modules_private_attributes():
    found = [line for path, source in _modules() for line in violations(source, path)]
    assert not found, (
        "private attributes of another module (give the owner a method, or make it a "
        "public field of a record the owner documents; see tests/test_privates.py):\n"
        + "\n".join(found)
    )


def test_every_allowed_internal_is_still_used():
    """An allow-list entry whose use went away is removed, so it cannot hide a new one."""
    sources = dict(_modules())
    for path, expression in INTERNALS:
        used = [line.split(": ", 1)[1] for line in violations(sources[path], path, allow=False)]
        assert expression in used, f"{path}: {expression} is no longer used"


def test_the_check_catches_what_it_is_for():
    """The checker itself: every way of reaching in is found, its own privates are not."""
    source = (
        "from chatd.chat.client import _helper\n"
        "from .flood import _Bucket\n"
        "class Domain:\n"
        "    __slots__ = ('_owned_slot',)\n"
        "    _counter = 0\n"
        "    def __init__(self, other):\n"
        "        self._mine = 1\n"
        "        other._mine = 2              # its own name: a helper of this module\n"
        "        other._gate = None           # another module's\n"
        "        other.link._after_cr = True  # another module's, deeper\n"
        "        x = other._owned_slot + other._counter + other._inner()\n"
        "        getattr(other, '_stash')\n"
        "        setattr(other, '_quit', 1)\n"
        "        del other._gone\n"
        "        other.__class__.__name__    # dunders are public\n"
        "        self._whatever              # self may read what its bases define\n"
        "    def _inner(self):\n"
        "        return super()._elsewhere()\n"
    )
    found = [line.split(": ", 1)[1] for line in violations(source, "chatd/chat/domain.py")]
    assert sorted(found) == sorted([
        "from chatd.chat.client import _helper",
        "from chatd.chat.flood import _Bucket",
        "other._gate",
        "other.link._after_cr",
        "getattr(other, '_stash')",
        "setattr(other, '_quit')",
        "other._gone",
        "super()._elsewhere",
    ]), found
    assert violations("import os\nos._exit(0)\n", "chatd/x.py") == []
    assert violations("sock._accept()\n", "chatd/x.py") == ["chatd/x.py:1: sock._accept"]
