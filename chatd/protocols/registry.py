"""The protocol registry: every wire format a listener can speak, registered once.

A protocol registers one :class:`ProtocolSpec`: its name (what a listener's
``protocol:`` says), its :class:`~chatd.protocols.base.ChatProtocol` class, the
schema of its own listener options (a frozen dataclass of settings declared with
:func:`chatd.config_rules.setting`, the machinery every core setting uses), and
a doc line.  Everything else reads that one registration:

* **config validation** (:meth:`ProtocolRegistry.check_config`): a listener's
  ``protocol`` must be registered, and its keys beside the core's (host, port,
  tls...) must be options of that protocol, each checked against its setting;
  errors name the file, the key and the line (the loader recorded them), as
  every config error does;
* **--check-config, start-up and a reload's dry run** check with the plugins
  loaded (the composition root, :func:`chatd.server.collect_protocols`), since a
  plugin may register the protocol a listener names; :func:`chatd.config.load_config`
  keeps what it cannot check yet (the keys it does not know, with their lines);
* **docs/config.md** lists each built-in protocol's options
  (:func:`config_reference`);
* **the listener** takes the class from here, and the protocol reads its checked
  options (every one, defaults filled in) as ``self.listener.options``.

An options dataclass may check its settings together in ``__post_init__`` (raising
:class:`~chatd.config_rules.Invalid` with the ``key`` at fault): the built-ins'
(:class:`~chatd.protocols.base.ListenerOptions`) refuse both ``password`` and
``password_file``, and a password file that cannot be read.

The built-ins, ``line``, ``jsonl``, ``irc`` and ``websocket``, are registered here as data
(:data:`BUILTIN_PROTOCOLS`); a plugin adds its own with the ``chatd_protocols``
hook.  A name is registered once: a plugin cannot replace a built-in or another
plugin's protocol (a start-up error that names it), because a listener would
otherwise speak whichever plugin loaded last.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PROTOCOL_NAME, Config, ListenConfig
from ..config import config_reference as _schema_reference
from ..config_docs import Section
from ..config_rules import FieldSpec, Invalid, check_value, field_specs, unknown_key
from .base import ChatProtocol, ListenerOptions, ProtocolLimits
from .irc import IrcOptions, IrcProtocol
from .jsonl import JsonlProtocol
from .line import LineProtocol
from .websocket import WebSocketOptions, WebSocketProtocol

#: The keys every listener has, whatever its protocol: a protocol's option may not
#: take one of these names.
CORE_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ListenConfig) if not f.metadata.get("rest")
)


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """One protocol's registration (see the module docstring).

    ``options`` is a frozen dataclass whose fields are declared with
    :func:`chatd.config_rules.setting` (a default, a doc, a constraint), or None for a
    protocol with no options of its own.  A badly declared spec raises TypeError or
    ValueError when it is made, so a plugin's mistake stops the server at start-up,
    naming the plugin, never a listener later.
    """

    name: str
    protocol: type[ChatProtocol]
    doc: str
    options: type | None = None
    #: The options' settings by key, read once from ``options`` (config_rules' rows).
    option_specs: Mapping[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or re.fullmatch(PROTOCOL_NAME, self.name) is None:
            raise ValueError(f"protocol name {self.name!r}: lowercase letters, digits, '-' "
                             "and '_', starting with a letter (at most 32)")
        if not (isinstance(self.protocol, type) and issubclass(self.protocol, ChatProtocol)):
            raise TypeError(f"protocol {self.name!r}: {self.protocol!r} is not a ChatProtocol "
                            "subclass")
        named = self.protocol.wire_name or self.protocol.renderer.name
        if named != self.name:
            raise ValueError(f"protocol {self.name!r}: its renderer is named "
                             f"{named!r} (clients show it as their "
                             "protocol): give both the same name (or set the class's "
                             "wire_name)")
        if not isinstance(self.doc, str) or not self.doc.strip():
            raise ValueError(f"protocol {self.name!r}: a doc line is required")
        specs: dict[str, FieldSpec] = {}
        if self.options is not None:
            if not (isinstance(self.options, type) and dataclasses.is_dataclass(self.options)):
                raise TypeError(f"protocol {self.name!r}: options must be a dataclass of "
                                "settings (chatd.config_rules.setting), or None")
            specs = field_specs(self.options)
        clash = sorted(set(specs) & set(CORE_KEYS))
        if clash:
            raise ValueError(f"protocol {self.name!r}: option {clash[0]!r} is a key every "
                             "listener has; choose another name")
        object.__setattr__(self, "option_specs", types.MappingProxyType(specs))


#: The protocols chatd ships, registered before any plugin's.
BUILTIN_PROTOCOLS: tuple[ProtocolSpec, ...] = (
    ProtocolSpec(
        "line", LineProtocol,
        "People with nc, ncat, telnet or socat: a line per message or /command, marked "
        "lines out (docs/protocols.md).",
        ListenerOptions,
    ),
    ProtocolSpec(
        "jsonl", JsonlProtocol,
        "Programs (bots, bridges, dashboards): one JSON object per line each way "
        "(docs/protocols.md).",
        ListenerOptions,
    ),
    ProtocolSpec(
        "irc", IrcProtocol,
        "IRC clients (irssi, WeeChat, HexChat) and IRC bots: registration, numerics and "
        "IRCv3 capabilities, in the same rooms as everyone (docs/irc.md).",
        IrcOptions,
    ),
    ProtocolSpec(
        "websocket", WebSocketProtocol,
        "Browsers (the page it serves on GET /) and programs over WebSocket: jsonl in "
        "text frames, in the same rooms as everyone (docs/web.md). Needs the web extra: "
        "pip install 'chatd[web]'.",
        WebSocketOptions,
    ),
)


class ProtocolRegistry:
    """The protocols one server knows: the built-ins, then what plugins registered."""

    def __init__(self, specs: Iterable[ProtocolSpec] = BUILTIN_PROTOCOLS) -> None:
        self._specs: dict[str, ProtocolSpec] = {}
        #: Who registered each protocol (``chatd`` for the built-ins), for errors.
        self._owners: dict[str, str] = {}
        for spec in specs:
            self.add(spec, "chatd")

    def add(self, spec: object, owner: str) -> None:
        """Register ``spec`` for ``owner`` (a plugin's name); ValueError or TypeError
        if it is no ProtocolSpec or its name is taken."""
        if not isinstance(spec, ProtocolSpec):
            raise TypeError(f"expected ProtocolSpec objects, got {spec!r}")
        taken = self._owners.get(spec.name)
        if taken is not None:
            whose = "built in" if taken == "chatd" else f"by plugin {taken!r}"
            raise ValueError(f"protocol {spec.name!r} is already registered ({whose})")
        self._specs[spec.name] = spec
        self._owners[spec.name] = owner

    def get(self, name: str) -> ProtocolSpec | None:
        return self._specs.get(name)

    def __getitem__(self, name: str) -> ProtocolSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[ProtocolSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    # -- the config ------------------------------------------------------------------

    def check_config(self, config: Config) -> Config:
        """``config`` with every listener checked against its protocol's registration
        and its options complete (defaults filled in); ConfigError naming the file, the
        key and the line otherwise.  Checking a checked config changes nothing."""
        listen = tuple(self.check_listener(config, index, listener)
                       for index, listener in enumerate(config.listen))
        if listen == config.listen:
            return config
        return dataclasses.replace(config, listen=listen)

    def check_listener(self, config: Config, index: int, listener: ListenConfig) -> ListenConfig:
        """One listener (``config.listen[index]``) checked; see :meth:`check_config`."""
        key = _listener_key(config, index)
        spec = self._specs.get(listener.protocol)
        if spec is None:
            raise config.error(
                f"{key}.protocol",
                f"unknown protocol {listener.protocol!r} (known: {', '.join(self.names)}; "
                "a plugin adds one with chatd_protocols)")
        base_dir = config.source.parent if config.source is not None else Path.cwd()
        values: dict[str, Any] = {}
        for name, raw in listener.options.items():
            dotted = f"{key}.{name}"
            setting = spec.option_specs.get(name)
            if setting is None:
                raise config.error(dotted, self._unknown_option(spec, name))
            try:
                values[name] = check_value(setting, raw, base_dir)
            except Invalid as exc:
                raise config.error(dotted, str(exc)) from None
        options = {name: values.get(name, setting.default)
                   for name, setting in spec.option_specs.items()}
        if spec.options is not None:
            try:  # the options together: their dataclass's __post_init__ checks them
                spec.options(**options)
            except Invalid as exc:
                where = f"{key}.{exc.key}" if exc.key else key
                raise config.error(where, str(exc)) from None
        self._check_limits(config, key, spec, options)
        if options == listener.options:
            return listener
        return dataclasses.replace(listener, options=types.MappingProxyType(options))

    def _check_limits(self, config: Config, key: str, spec: ProtocolSpec,
                      options: Mapping[str, Any]) -> None:
        """Ask the protocol for its listener's input limits now, as the listener will
        when it is made: a plugin's ``input_limits`` that raises, or returns something
        else, is a ConfigError naming the listener and the plugin (``--check-config``, a
        reload's dry run), never a traceback when the server binds."""
        server = ProtocolLimits(max_line_bytes=config.limits.max_line_bytes,
                                recvq_max=config.limits.recvq_max_bytes)
        try:
            limits = spec.protocol.input_limits(server, options)
        except Exception as exc:
            why = f"its input_limits raised {type(exc).__name__}: {exc}"
        else:
            if limits.__class__ is ProtocolLimits and limits.max_line_bytes >= 1:
                return
            why = (f"its input_limits returned {limits!r}, not a ProtocolLimits with a "
                   "positive max_line_bytes")
        owner = self._owners.get(spec.name, "?")
        whose = "built in" if owner == "chatd" else f"plugin {owner!r}"
        raise config.error(key, f"protocol {spec.name!r} ({whose}) cannot serve it: {why}")

    def _unknown_option(self, spec: ProtocolSpec, name: str) -> str:
        """The message for a key that is neither the core's nor ``spec``'s: a typo (did you
        mean), or another protocol's option (say whose)."""
        known = [*CORE_KEYS, *spec.option_specs]
        others = [other.name for other in self if name in other.option_specs]
        if others:
            return (f"not an option of protocol {spec.name!r} (it is one of "
                    f"{', '.join(others)}; {spec.name}'s keys: {', '.join(known)})")
        return unknown_key(name, known)

    # -- the reference ---------------------------------------------------------------

    def reference_sections(self) -> list[Section]:
        """One section of docs/config.md per protocol: its doc and its options."""
        sections = []
        for spec in self:
            title = f"`listen` with `protocol: {spec.name}`"
            if spec.option_specs:
                doc = f"{spec.doc} Its own keys, beside the ones every listener has:"
                sections.append(Section("listen", doc, spec.option_specs, title=title))
            else:
                doc = f"{spec.doc} No keys of its own."
                sections.append(Section("listen", doc, title=title))
        return sections


def _listener_key(config: Config, index: int) -> str:
    """How errors name listener ``index``: ``listen`` when the file has one mapping
    there, ``listen[N]`` when it has a list (the loader recorded which)."""
    listed = f"listen[{index}]"
    if listed in config.locations or len(config.listen) > 1:
        return listed
    return "listen"


def config_reference(registry: ProtocolRegistry | None = None) -> str:
    """docs/config.md: the schema's reference with each protocol's options (the
    built-ins' unless ``registry`` says otherwise)."""
    protocols = registry if registry is not None else ProtocolRegistry()
    return _schema_reference(protocols.reference_sections())


__all__ = [
    "BUILTIN_PROTOCOLS",
    "CORE_KEYS",
    "ProtocolRegistry",
    "ProtocolSpec",
    "config_reference",
]
