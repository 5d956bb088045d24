"""Finding plugins and importing them; the host registers what this hands it.

Plugins come from, in registration order:

1. the built-ins (:data:`BUILTIN_PLUGINS`), registered through the same path as
   everything else (the pytest habit: builtins are plugins, listed as data);
2. installed distributions declaring the entry-point group ``chatd`` (unless
   ``plugin_host.entry_points`` is false);
3. dotted module names in ``plugin_host.modules``;
4. ``.py`` files and packages in the config's ``plugin_dirs``.

Any of them can be switched off by name with ``plugin_host.disable``
(:class:`DisabledNames`, which also catches a name that matches no plugin).

Each source is a generator of :class:`Found` plugins: it imports one plugin,
hands it over, and imports the next only when asked, so a plugin the host
refuses stops the loading before anything after it is imported (as it always
did).  A plugin that cannot be imported is a :class:`PluginLoadError` naming
it; nothing here registers anything or knows pluggy.

Plugin files are imported as ``chatd_plugins.<stem>`` and kept in
``sys.modules`` (never ``exec``'d on the side), compiled from source every time,
and refused when users other than chatd's own could change them.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import pwd
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from ..version import __version__

#: The plugins shipped with chatd, by name.  Each is an ordinary plugin module.
BUILTIN_PLUGINS: dict[str, str] = {
    "rooms": "chatd.builtin.rooms",
    "commands": "chatd.builtin.commands",
    "log": "chatd.builtin.log",
    "oper": "chatd.builtin.oper",
    "presence": "chatd.builtin.presence",
    "ignore": "chatd.builtin.ignore",
    "settings": "chatd.builtin.settings",
    "history": "chatd.builtin.history",
    "accounts": "chatd.builtin.accounts",
    "moderation": "chatd.builtin.moderation",
    "cluster": "chatd.builtin.cluster",
}

ENTRY_POINT_GROUP = "chatd"
_DIR_PLUGIN_PACKAGE = "chatd_plugins"


class PluginLoadError(Exception):
    """A plugin could not be imported or registered; the message names it."""


class Found(NamedTuple):
    """One plugin found and imported, ready for :meth:`PluginHost.register`."""

    plugin: object
    name: str
    source: str  # "builtin", "entry point (dist 1.0)", "file /path/x.py"
    version: str | None


class DisabledNames:
    """``plugin_host.disable``: the names to skip, and which of them were seen."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self._seen: set[str] = set()

    def skip(self, name: str) -> bool:
        """Whether ``name`` is switched off (and remember that it was there to skip)."""
        if name in self.names:
            self._seen.add(name)
            return True
        return False

    def check(self, loaded: Iterable[str]) -> None:
        """Every disabled name must name a plugin: a typo would otherwise leave the
        plugin running while the operator thinks it is off."""
        unknown = sorted(self.names - self._seen)
        if unknown:
            known = ", ".join(sorted({*loaded, *self._seen}))
            raise PluginLoadError(
                f"plugin_host.disable: no plugin named {', '.join(map(repr, unknown))} "
                f"(plugins: {known})"
            )


def builtins(names: Iterable[str] | None, disabled: DisabledNames) -> Iterator[Found]:
    """chatd's own plugins (``names``, default all of them), in the table's order."""
    for name in names if names is not None else BUILTIN_PLUGINS:
        if disabled.skip(name):
            continue
        module = importlib.import_module(BUILTIN_PLUGINS[name])
        yield Found(module, name, "builtin", __version__)


def from_modules(dotted_names: Iterable[str], disabled: DisabledNames) -> Iterator[Found]:
    """Modules named in config (``plugin_host.modules``), imported by dotted name."""
    for dotted in dotted_names:
        name = dotted.rpartition(".")[2]
        if disabled.skip(name) or disabled.skip(dotted):
            continue
        try:
            module = importlib.import_module(dotted)
        except (Exception, SystemExit) as exc:
            raise PluginLoadError(
                f"plugin module {dotted!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        name = getattr(module, "PLUGIN_NAME", name)
        version = getattr(module, "__version__", None)
        yield Found(module, name, f"module {dotted}", version)


def from_entry_points(disabled: DisabledNames) -> Iterator[Found]:
    """Installed distributions declaring the ``chatd`` entry-point group."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if disabled.skip(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        where = f"entry point {ep.value}" + (f" in {dist.name}" if dist else "")
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"plugin {ep.name!r} ({where}) failed to import: "
                                  f"{type(exc).__name__}: {exc}") from exc
        yield Found(plugin, ep.name, where, dist.version if dist else None)


def from_directory(directory: Path, disabled: DisabledNames) -> Iterator[Found]:
    """Every ``*.py`` file and package in ``directory`` (sorted by name)."""
    if not directory.is_dir():
        raise PluginLoadError(f"plugin directory {str(directory)!r} does not exist")
    _refuse_if_others_can_write(directory)
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" or path.is_dir():
            _refuse_if_others_can_write(path)
        stem = path.stem if path.suffix == ".py" else path.name
        if disabled.skip(stem):
            continue
        if path.suffix == ".py" and path.is_file():
            module = _import_file(path.stem, path, package=False)
        elif path.is_dir() and (path / "__init__.py").is_file():
            module = _import_file(path.name, path / "__init__.py", package=True)
        else:
            continue
        name = getattr(module, "PLUGIN_NAME", path.stem)
        if disabled.skip(name):
            del sys.modules[f"{_DIR_PLUGIN_PACKAGE}.{path.stem}"]
            continue
        version = getattr(module, "__version__", None)
        yield Found(module, name, f"file {path}", version)


def _refuse_if_others_can_write(path: Path) -> None:
    """Plugin code that other users can change is code they can run as chatd.

    sshd's StrictModes rule: a plugin folder or file writable by everyone is
    refused, and one writable by its group unless that group is the owner's own
    (the user-private-group convention of umask 002 systems).
    """
    info = path.stat()
    loose = bool(info.st_mode & 0o002)
    if not loose and info.st_mode & 0o020:
        try:
            loose = pwd.getpwuid(info.st_uid).pw_gid != info.st_gid
        except KeyError:  # an owner with no passwd entry: nobody vouches for the group
            loose = True
    if loose:
        kind = "folder" if path.is_dir() else "file"
        raise PluginLoadError(
            f"plugin {kind} {str(path)!r} is writable by other users (mode "
            f"{oct(info.st_mode & 0o777)}): anyone who can write it can run code as chatd; "
            f"chmod go-w {str(path)!r}"
        )


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Always compile plugin files from source, never from ``__pycache__``.

    The bytecode cache is keyed on the file's mtime in whole seconds and its
    size, so an edit of the same size within the same second would make a
    reload run the old code.  Plugins are small; compiling them is cheap.
    """

    def path_stats(self, path: str) -> dict[str, float]:
        raise OSError("plugin files bypass the bytecode cache")


def _import_file(stem: str, path: Path, *, package: bool) -> types.ModuleType:
    """Import a plugin file as ``chatd_plugins.<stem>`` and keep it in sys.modules."""
    if _DIR_PLUGIN_PACKAGE not in sys.modules:
        parent = types.ModuleType(_DIR_PLUGIN_PACKAGE)
        parent.__path__ = []
        sys.modules[_DIR_PLUGIN_PACKAGE] = parent
    module_name = f"{_DIR_PLUGIN_PACKAGE}.{stem}"
    spec = importlib.util.spec_from_file_location(
        module_name,
        path,
        loader=_FreshSourceLoader(module_name, str(path)),
        submodule_search_locations=[str(path.parent)] if package else None,
    )
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[module_name]
        raise PluginLoadError(
            f"plugin file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def plugin_modules() -> dict[str, types.ModuleType]:
    """The plugin files' modules now in ``sys.modules`` (``chatd_plugins.*``).

    A reload imports the new files under the same names, replacing these; if the
    reload then fails, :func:`restore_plugin_modules` puts them back, so code that
    looks a plugin module up by name keeps finding the one that is running.
    """
    prefix = _DIR_PLUGIN_PACKAGE + "."
    return {name: module for name, module in sys.modules.items()
            if name == _DIR_PLUGIN_PACKAGE or name.startswith(prefix)}


def restore_plugin_modules(saved: Mapping[str, types.ModuleType]) -> None:
    """Make the ``chatd_plugins.*`` entries of ``sys.modules`` exactly ``saved`` again."""
    for name in plugin_modules().keys() - saved.keys():
        del sys.modules[name]
    sys.modules.update(saved)
