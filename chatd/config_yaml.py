"""Reading a config file: YAML nodes -> plain frozen values, with a line for every error.

To name the line of every mistake, the text is composed into a node tree with a
``SafeLoader`` and the values are built from the nodes here, instead of calling
``yaml.safe_load``.  Only plain YAML data is allowed (``safe_load`` semantics):
any tag the ``SafeLoader`` cannot construct, such as ``!!python/object/apply``, is
an error before anything is constructed, so a config file can never run code.
Duplicate keys are errors (a silently ignored setting is exactly the mistake
this exists to catch), ``<<`` merge keys and aliases work and cost nothing
extra, ``${NAME}`` is replaced from the environment, and the file itself must be
a regular file of at most :data:`MAX_CONFIG_BYTES`.

:class:`NodeReader` knows YAML and :mod:`chatd.config_rules`, not the schema:
:mod:`chatd.config` builds its ``Config`` with a subclass.
"""

from __future__ import annotations

import os
import re
import stat
import types
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .config_rules import ConfigError, FieldSpec, Invalid, check_value, show, unknown_key

_YAML = "tag:yaml.org,2002:"
#: The tags of a plain mapping and sequence (the schema in config.py checks shapes too).
MAP_TAG = _YAML + "map"
SEQ_TAG = _YAML + "seq"
_NULL_TAG = _YAML + "null"
_MERGE_TAG = _YAML + "merge"
# Exactly the tags yaml.safe_load can construct; everything else (!!python/..., !custom)
# is refused before construction.
_SAFE_TAGS = frozenset(t for t in yaml.SafeLoader.yaml_constructors if t is not None)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def join_key(path: str, key: object) -> str:
    """Dotted key path: 'limits' + 'max_line_bytes' -> 'limits.max_line_bytes'."""
    return f"{path}.{key}" if path else str(key)


def _short_tag(tag: str) -> str:
    """Show YAML core tags the way they are written in a file ('!!int')."""
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _freeze(value: Any) -> Any:
    """Make values built by the SafeConstructor (for !!set, !!omap, ...) read-only too."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, set):
        return frozenset(value)
    return value


_Pairs = dict[Hashable, tuple[Node, Node]]


class NodeReader:
    """Reads plain values from a composed node tree, keeping each node's line for errors.

    Values are memoised per node, so YAML aliases cost nothing extra (an alias "bomb"
    stays linear) and an alias that contains itself is detected instead of recursing.
    """

    def __init__(self, loader: yaml.SafeLoader, file: str | None, base_dir: Path) -> None:
        self.loader = loader
        self.file = file
        self.base_dir = base_dir
        self.values: dict[int, Any] = {}
        self.pairs_cache: dict[int, _Pairs] = {}
        self.in_progress: set[int] = set()
        self.merging: set[int] = set()
        self.locations: dict[str, int] = {}

    def error(self, message: str, key: str | None, node: Node | None) -> ConfigError:
        """A ConfigError at `node`'s line (YAML marks are 0-based, editors are 1-based)."""
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(message, file=self.file, key=key or None, line=line)

    # -- generic values -------------------------------------------------------------

    def check_tag(self, node: Node, key: str) -> None:
        """Refuse tags yaml.safe_load would refuse, before anything is constructed."""
        if node.tag not in _SAFE_TAGS:
            raise self.error(
                f"unsupported YAML tag {_short_tag(node.tag)!r}: only plain YAML data is "
                "allowed (maps, lists, strings, numbers, booleans, null)",
                key,
                node,
            )

    def is_null(self, node: Node) -> bool:
        """True for an empty value or explicit null (`key:`, `key: ~`, `key: null`)."""
        return isinstance(node, ScalarNode) and node.tag == _NULL_TAG

    def construct(self, node: Node, key: str) -> Any:
        """Construct a scalar (or a rare !!set/!!omap) with the SafeConstructor."""
        self.check_tag(node, key)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self.error(exc.problem or str(exc), key, node) from None
        except Exception as exc:
            # The SafeConstructor reports bad explicit scalars (`!!int abc`, `!!bool maybe`)
            # as ValueError/KeyError/...; whatever it is, it is a problem in the file.
            value = getattr(node, "value", "")
            raise self.error(
                f"invalid {_short_tag(node.tag)} value {show(value)}: {exc}", key, node
            ) from None

    def describe(self, node: Node, key: str) -> str:
        """Name what a node holds, for 'expected X, got Y' messages."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return show(self.construct(node, key))

    def expand(self, text: str, key: str, node: Node) -> str:
        """Replace ${NAME} with os.environ[NAME] so secrets can stay out of the file."""

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            try:
                return os.environ[name]
            except KeyError:
                raise self.error(
                    f"environment variable {name!r} is not set (referenced as ${{{name}}})",
                    key,
                    node,
                ) from None

        return _ENV_REF.sub(lookup, text) if "${" in text else text

    def value(self, node: Node, key: str) -> Any:
        """Any plain YAML value, frozen: mappings -> MappingProxyType, lists -> tuples."""
        node_id = id(node)
        if node_id in self.values:
            return self.values[node_id]
        if node_id in self.in_progress:
            raise self.error("recursive alias: this value contains itself", key, node)
        self.check_tag(node, key)
        self.in_progress.add(node_id)
        try:
            result: Any
            if isinstance(node, ScalarNode):
                result = self.construct(node, key)
                if isinstance(result, str):
                    result = self.expand(result, key, node)
            elif isinstance(node, MappingNode) and node.tag == MAP_TAG:
                result = types.MappingProxyType(
                    {
                        k: self.value(v, join_key(key, k))
                        for k, (_knode, v) in self.pairs(node, key).items()
                    }
                )
            elif isinstance(node, SequenceNode) and node.tag == SEQ_TAG:
                result = tuple(self.value(item, f"{key}[{i}]") for i, item in enumerate(node.value))
            else:
                result = _freeze(self.construct(node, key))
        finally:
            self.in_progress.discard(node_id)
        self.values[node_id] = result
        return result

    def key(self, node: Node, path: str) -> Hashable:
        """A mapping key; only scalars, because lists and mappings are not hashable."""
        if not isinstance(node, ScalarNode):
            raise self.error(
                "a mapping key must be a plain scalar, not a list or mapping", path, node
            )
        key: Hashable = self.construct(node, path)
        return key

    def pairs(self, node: MappingNode, path: str) -> _Pairs:
        """A mapping's entries by key, refusing duplicates and applying `<<` merge keys.

        A duplicate key is an error rather than "last one wins" because a silently
        ignored setting is exactly the kind of mistake this module exists to catch.
        Merged-in keys may be overridden by the mapping's own keys (YAML merge rules).
        """
        node_id = id(node)
        cached = self.pairs_cache.get(node_id)
        if cached is not None:
            return cached
        if node_id in self.merging:
            raise self.error("recursive merge: this mapping merges itself", path, node)
        self.merging.add(node_id)
        try:
            own: _Pairs = {}
            merged: _Pairs = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    for source in self.merge_sources(value_node, path):
                        for k, pair in self.pairs(source, path).items():
                            merged.setdefault(k, pair)
                    continue
                k = self.key(key_node, path)
                if k in own:
                    first = own[k][0].start_mark.line + 1
                    raise self.error(
                        f"duplicate key (first defined on line {first})", join_key(path, k),
                        key_node,
                    )
                own[k] = (key_node, value_node)
        finally:
            self.merging.discard(node_id)
        result = {**merged, **own}
        self.pairs_cache[node_id] = result
        return result

    def merge_sources(self, node: Node, path: str) -> list[MappingNode]:
        """The mappings a `<<` key merges: one mapping or a list of mappings."""
        if isinstance(node, MappingNode) and node.tag == MAP_TAG:
            return [node]
        if isinstance(node, SequenceNode) and all(
            isinstance(item, MappingNode) and item.tag == MAP_TAG for item in node.value
        ):
            return list(node.value)
        raise self.error("a '<<' merge key needs a mapping or a list of mappings", path, node)

    # -- the schema -------------------------------------------------------------------

    def unknown(self, dotted: str, key: object, known: list[str], node: Node) -> ConfigError:
        """An unknown key, with a did-you-mean when one is close (typos are the usual cause)."""
        return self.error(unknown_key(key, known), dotted, node)

    def expect_mapping(self, node: Node, key: str, what: str) -> MappingNode:
        """Insist on a plain mapping, naming what was found instead."""
        self.check_tag(node, key)
        if not (isinstance(node, MappingNode) and node.tag == MAP_TAG):
            raise self.error(f"expected {what}, got {self.describe(node, key)}", key, node)
        return node

    def section(self, name: str, node: Node, cls: type, specs: dict[str, FieldSpec],
                nested: tuple[str, ...] = ()) -> Any:
        """One typed section: known keys only, each value checked against its field spec."""
        if self.is_null(node):
            return cls()
        mapping = self.expect_mapping(node, name, "a mapping of settings")
        values: dict[str, Any] = {}
        for k, (key_node, value_node) in self.pairs(mapping, name).items():
            dotted = join_key(name, k)
            spec = specs.get(k) if isinstance(k, str) else None
            if spec is None:
                raise self.unknown(dotted, k, [*specs, *nested], key_node)
            raw = self.value(value_node, dotted)
            try:
                values[spec.name] = check_value(spec, raw, self.base_dir)
            except Invalid as exc:
                raise self.error(str(exc), dotted, value_node) from None
        return cls(**values)


def _yaml_error(exc: yaml.YAMLError, file: str | None, text: str) -> ConfigError:
    """Turn a PyYAML syntax error into a ConfigError with a 1-based line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem, context = exc.problem, exc.context
        if problem and context:
            # PyYAML's own rendering is "<context> <context mark> <problem> <problem mark>";
            # keep that reading order, on one line, naming the context's line if different.
            if exc.context_mark is not None and exc.context_mark.line + 1 != line:
                context += f" (line {exc.context_mark.line + 1})"
            detail = (
                f"{context}, {problem}" if problem.startswith("but ") else f"{problem}, {context}"
            )
        else:
            detail = problem or context or "syntax error"
        return ConfigError(f"invalid YAML: {detail}", file=file, line=line)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return ConfigError(
            f"invalid YAML: character #x{exc.character:04x} is not allowed", file=file, line=line
        )
    return ConfigError(f"invalid YAML: {exc}", file=file)


def compose(text: str, file: str | None) -> tuple[yaml.SafeLoader, Node | None]:
    """The loader and the root node of ``text`` (one document); the caller disposes of
    the loader.  Syntax errors are ConfigErrors with a line."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise _yaml_error(exc, file, text) from None
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError as exc:
        loader.dispose()
        raise _yaml_error(exc, file, text) from None
    except RecursionError:
        loader.dispose()
        raise ConfigError("the document is nested too deeply", file=file) from None


#: The largest config file read (a config is a few KiB; a huge one is a mistake or
#: an attack on whoever runs --check-config on it).
MAX_CONFIG_BYTES = 1 << 20


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The text of a config file; every failure, including I/O, is a ConfigError.

    The file must be a regular file (not a FIFO or a device that would block or
    never end) of at most :data:`MAX_CONFIG_BYTES`.
    """
    file = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        with os.fdopen(os.open(file, os.O_RDONLY | os.O_NONBLOCK), "rb") as raw:
            info = os.fstat(raw.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError("not a regular file", file=file)
            if info.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"too large ({info.st_size} bytes; at most {MAX_CONFIG_BYTES})", file=file
                )
            data = raw.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"too large (more than {MAX_CONFIG_BYTES} bytes)", file=file)
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read file: not valid UTF-8 (bad byte at offset {exc.start})", file=file
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", file=file) from None
    return text
