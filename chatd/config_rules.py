"""The rules a config value must satisfy, kept as data: how chatd checks one setting.

Each setting is a dataclass field declared with :func:`setting`: a default, a
one-line doc and a :class:`Constraint`.  :func:`field_specs` reads a section's
fields once, at import, into :class:`FieldSpec` rows; :func:`check_value` validates
one value against one row and words the error the way every error is worded
(``expected an integer between 16 and 1073741824, got 'abc'``); the same rows
drive the generated reference (:mod:`chatd.config_docs`).  So a rule that is not
written here cannot drift from the docs, and adding a setting is adding a field.

The rules are strict on purpose: a bool is not an int (YAML's ``yes`` would
otherwise be 1), strings are never turned into numbers, and every number has a
ceiling: the range the operating system and the libraries accept (the
constants below), because every number ends in a timer, a socket option, an
allocation or a SQL parameter, each with a ceiling of its own.  A numeric field
declared without one breaks the import.

Nothing here knows the schema (:mod:`chatd.config`) or YAML
(:mod:`chatd.config_yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


class ConfigError(Exception):
    """A config problem, located precisely enough to fix without guessing.

    The parts are kept as attributes (``file``, ``key``, ``line``, ``message``) so callers
    and tests can inspect them; ``str()`` joins the parts that are known, in the
    compiler-style order editors understand: ``file:line: key: message``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key
        self.line = line

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        elif self.line is not None:
            # No file name (parse_config without source); still say where.
            parts.append(f"line {self.line}")
        if self.key:
            parts.append(_printable(self.key))
        parts.append(self.message)
        return ": ".join(parts)


def _printable(text: str) -> str:
    """``text`` with what a terminal would not print as itself escaped (``\\u202e``): a
    key comes from the file, and an error message must show it, not obey it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@dataclass(frozen=True, slots=True)
class Constraint:
    """Rules a setting's value must satisfy beyond its type.

    Kept as data (not code) so the same table drives validation, error wording and the
    generated reference; a rule that is not written here cannot drift from the docs.
    """

    ge: float | None = None  # inclusive lower bound (numbers)
    gt: float | None = None  # exclusive lower bound, for "must be > 0" (numbers)
    le: float | None = None  # inclusive upper bound (numbers)
    choices: tuple[str, ...] | None = None  # allowed values (strings)
    pattern: str | None = None  # re.fullmatch pattern (strings)
    describe: str | None = None  # human wording of `pattern` for messages and docs
    upper: bool = False  # input is case-insensitive; stored upper-cased (before `choices`)
    path: bool = False  # a filesystem path; relative values resolve against the config's folder
    shown: str | None = None  # users see it: "name" or "text" (see shown_text_problem)


def setting(
    default: _T,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    describe: str | None = None,
    upper: bool = False,
    path: bool = False,
    shown: str | None = None,
) -> _T:
    """Declare one setting: its default, a one-line doc and its constraint.

    A thin wrapper over ``dataclasses.field(metadata=...)`` so every setting carries the
    metadata the loader and :func:`config_reference` rely on, spelled the same way.
    """
    constraint = Constraint(
        ge=ge,
        gt=gt,
        le=le,
        choices=choices,
        pattern=pattern,
        describe=describe,
        upper=upper,
        path=path,
        shown=shown,
    )
    return field(default=default, metadata={"doc": doc, "constraint": constraint})


# -- the ranges the operating system and the libraries accept ----------------------------
# Every number a setting holds ends up somewhere that has a ceiling of its own; a value
# past it must be refused here, with the key and the line, not found later as an
# OverflowError in the event loop or a MemoryError at start-up (issue 18, rule 3).

#: Longest timeout, delay or window, in seconds (about 11.5 days).  Timers end in
#: ``epoll_wait()``, whose timeout is a C int of milliseconds (2**31 - 1 ms, about
#: 24.8 days: Python raises OverflowError past it), and so is TCP_USER_TIMEOUT.
MAX_SECONDS = 1_000_000.0
#: Most bytes a per-connection limit or socket buffer may be: 1 GiB.  ``setsockopt()``
#: takes a C int and Linux doubles SO_SNDBUF/SO_RCVBUF (so at most 2**30).
MAX_BYTES = 1 << 30
#: Most bytes read per pass: the read buffer is allocated once at this size (16 MiB,
#: beyond any socket receive buffer: more is never read in one ``recv``).
MAX_READ_BYTES = 1 << 24
#: Most of anything counted (clients, rooms, connections, lines, failures): about the
#: most file descriptors a Linux process may have (fs.nr_open, 1,048,576).
MAX_COUNT = 1 << 20
#: Linux's ceilings for TCP keepalive: TCP_KEEPIDLE and TCP_KEEPINTVL (MAX_TCP_KEEPIDLE,
#: MAX_TCP_KEEPINTVL, seconds) and TCP_KEEPCNT (MAX_TCP_KEEPCNT); setsockopt refuses more.
MAX_KEEPALIVE_SECONDS = 32767
MAX_KEEPALIVE_PROBES = 127

# Characters that must not be in text users see (a server's name, a welcome line): they
# are invisible, reorder the text around them (bidi, CVE-2021-42574), or drive a
# terminal.  By Unicode category: controls (Cc), format characters (Cf: bidi marks and
# overrides, zero-width spaces and joiners, soft hyphen, tag characters...),
# surrogates, private use and unassigned code points, line and paragraph separators;
# plus letters and marks that render as nothing (Hangul fillers, braille blank,
# combining grapheme joiner, Khmer inherent vowels).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_BLANK_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
#: Zero-width (non-)joiners: needed inside running text (emoji sequences, Persian),
#: never in a name.
_JOINERS = frozenset("\u200c\u200d")


def shown_text_problem(text: str, *, kind: str = "text") -> str | None:
    """Why ``text`` may not be shown to users as configured, or None.

    ``kind`` is ``"name"`` (a server or room name: one word-like thing a reader must
    be able to trust) or ``"text"`` (a welcome line: running text, where zero-width
    joiners are part of emoji and scripts).  Checked per code point with
    :mod:`unicodedata`, so new invisible characters are refused as Unicode assigns
    them.
    """
    import unicodedata  # C module, loaded on first use: imports stay fast

    for char in text:
        if kind == "text" and char in _JOINERS:
            continue
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES or char in _BLANK_LETTERS:
            what = unicodedata.name(char, "") or {"Cc": "a control character"}.get(
                category, "an unassigned or private code point")
            return (f"holds U+{ord(char):04X} ({what}): control, invisible and bidi "
                    f"characters are not allowed in a {kind} users see")
    return None


TYPE_WORDS: dict[type, tuple[str, str]] = {
    # kind: (phrase for messages, word for the reference table)
    int: ("an integer", "integer"),
    float: ("a number", "number"),
    str: ("a string", "string"),
    bool: ("a boolean (true or false)", "boolean"),
    tuple: ("a list of strings", "list of strings"),
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One setting as the loader sees it: what it accepts and how to describe it."""

    name: str
    kind: type
    optional: bool
    default: Any
    doc: str
    constraint: Constraint


class Invalid(Exception):
    """A value broke its field's rules; the caller adds file, key and line.

    ``key``: the setting at fault when the rule is about several of a section's
    settings together (raised by the section's ``__post_init__``), so the error can
    name the one to change.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def unknown_key(key: object, known: list[str]) -> str:
    """The message for an unknown key: a did-you-mean when one is close (typos are the
    usual cause), else the keys there are."""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"unknown key ({hint})"


def show(value: Any) -> str:
    """repr() a value for a message, cut short so a huge value cannot flood a log line."""
    text = repr(list(value) if isinstance(value, tuple) else value)  # YAML lists are tuples here
    return text if len(text) <= 80 else text[:77] + "..."


def num(bound: float) -> str:
    """Format a bound the way a user would write it (16, not 16.0)."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def bounds_text(c: Constraint) -> str:
    """Numeric range wording, e.g. '>= 16' or 'between 0 and 65535'."""
    if c.ge is not None and c.le is not None:
        return f"between {num(c.ge)} and {num(c.le)}"
    parts = []
    if c.ge is not None:
        parts.append(f">= {num(c.ge)}")
    if c.gt is not None:
        parts.append(f"> {num(c.gt)}")
    if c.le is not None:
        parts.append(f"<= {num(c.le)}")
    return " and ".join(parts)


def rules_text(spec: FieldSpec) -> str:
    """Non-numeric rule wording (choices, pattern), for messages and the reference."""
    c = spec.constraint
    parts = []
    if c.choices is not None:
        suffix = ", case-insensitive" if c.upper else ""
        parts.append(f"one of {', '.join(c.choices)}{suffix}")
    if c.pattern is not None:
        parts.append(c.describe or f"matching {c.pattern}")
    if c.path:
        parts.append("relative to the config file's folder")
    if c.shown:
        parts.append("no control, invisible or bidi characters")
    return "; ".join(parts)


def expected(spec: FieldSpec) -> str:
    """What a field accepts, as the 'expected ...' half of an error message."""
    text = TYPE_WORDS[spec.kind][0]
    bounds = bounds_text(spec.constraint)
    if bounds:
        text += f" {bounds}"
    rules = rules_text(spec)
    if rules:
        text += f" ({rules})"
    if spec.optional:
        text += ", or null"
    return text


def check_value(spec: FieldSpec, value: Any, base_dir: Path) -> Any:
    """Validate and normalise one value for `spec`; raise Invalid with the full message.

    Deliberately strict: bool is not an int (YAML's ``yes``/``on`` would otherwise become
    1), strings are never turned into numbers, and only float fields widen an int.
    """

    def invalid() -> Invalid:
        return Invalid(f"expected {expected(spec)}, got {show(value)}")

    if value is None:
        if spec.optional:
            return None
        raise invalid()
    result: Any = value
    if spec.kind is bool:
        ok = type(value) is bool
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                result = float(value)
            except OverflowError:
                ok = False
            else:
                ok = math.isfinite(result)
    elif spec.kind is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
        if ok:
            result = tuple(value)
            pattern = spec.constraint.pattern
            if pattern is not None and any(re.fullmatch(pattern, v) is None for v in result):
                raise invalid()
            return result
    else:
        ok = isinstance(value, spec.kind)
    if not ok:
        raise invalid()

    c = spec.constraint
    if isinstance(result, str) and c.upper:
        result = result.upper()
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        if c.ge is not None and not result >= c.ge:
            raise invalid()
        if c.gt is not None and not result > c.gt:
            raise invalid()
        if c.le is not None and not result <= c.le:
            raise invalid()
    if isinstance(result, str):
        if c.choices is not None and result not in c.choices:
            raise invalid()
        if c.pattern is not None and re.fullmatch(c.pattern, result) is None:
            raise invalid()
        problem = shown_text_problem(result, kind=c.shown) if c.shown else None
        if problem:
            raise Invalid(problem)
        if c.path:
            result = os.path.join(base_dir, result)
    return result


def unpack_hint(hint: Any, where: str) -> tuple[type, bool]:
    """Split a field's type hint into (scalar kind, accepts None); reject anything else."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            hint, optional = rest[0], True
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, Ellipsis):
        return tuple, optional
    if hint not in TYPE_WORDS:
        raise TypeError(
            f"{where}: unsupported setting type {hint!r}; "
            "use int, float, str, bool or tuple[str, ...]"
        )
    return hint, optional


def field_specs(cls: type) -> dict[str, FieldSpec]:
    """Read a section dataclass into specs, failing at import if a field is malformed.

    Checking here (type supported, doc present, default valid under its own constraint)
    means a badly declared new setting breaks the import and every test, not a user.
    """
    hints = typing.get_type_hints(cls)
    specs: dict[str, FieldSpec] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested") or f.metadata.get("rest"):
            continue  # a sub-section, parsed on its own (listen[].tls), or the keys left over
        where = f"{cls.__name__}.{f.name}"
        kind, optional = unpack_hint(hints[f.name], where)
        doc = f.metadata.get("doc")
        if not doc:
            raise TypeError(f"{where}: declare it with setting(default, doc, ...)")
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{where}: every setting needs a default")
        spec = FieldSpec(
            name=f.name,
            kind=kind,
            optional=optional,
            default=f.default,
            doc=doc,
            constraint=f.metadata.get("constraint", Constraint()),
        )
        if kind in (int, float) and spec.constraint.le is None:
            raise TypeError(f"{where}: a number needs an upper bound (le=...): the range "
                            "the operating system and the libraries accept")
        try:
            check_value(spec, f.default, Path.cwd())
        except Invalid as exc:
            raise TypeError(f"{where}: default breaks its own constraint: {exc}") from None
        specs[f.name] = spec
    return specs


def redact_url(url: str) -> str:
    """A database URL without its password, for logs, errors and ``--check-config``:
    ``postgresql://user:***@host/db``, every parameter whose name holds ``password``
    (``password``, ``sslpassword``, percent-encoded names too) as ``***``, and a
    libpq ``key=value`` string likewise.  Textual, so a password holding ``/``,
    ``?``, ``#`` or ``@`` is hidden whole; never raises."""
    if "://" not in url:  # host=... password=... (refused as storage.url, shown so)
        return _DSN_PASSWORD.sub(r"\1***", url)
    scheme, rest = url.split("://", 1)
    userinfo, tail = _split_userinfo(rest)
    if userinfo is not None and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    where, mark, query = tail.partition("?")
    if mark:
        query = "&".join(_redact_parameter(pair) for pair in query.split("&"))
    shown = f"{userinfo}@" if userinfo is not None else ""
    tail, fragment, _ = f"{where}{mark}{query}".partition("#")  # libpq has none: hide it
    return f"{scheme}://{shown}{tail}{'#***' if fragment else ''}"


def url_secrets(url: str) -> list[str]:
    """Every password in ``url`` as written and percent-decoded, longest first: what
    must be cut out of a message (psycopg's may quote a token of the URL)."""
    from urllib.parse import unquote

    found: list[str] = []
    if "://" not in url:
        found += [m.group(2).strip("'") for m in _DSN_PASSWORD.finditer(url)]
    else:
        userinfo, tail = _split_userinfo(url.split("://", 1)[1])
        if userinfo is not None and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        for pair in tail.partition("?")[2].split("&"):
            key, _, value = pair.partition("=")
            if "password" in unquote(key).lower():
                found.append(value)
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def redact_text(text: str, url: str) -> str:
    """``text`` (an error message) with every password of ``url`` replaced by ***."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


_DSN_PASSWORD = re.compile(r"""(?i)(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)""")


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """``user:password`` and what follows its ``@``: the last ``@`` before the first
    ``?`` (or, if none, the last ``@`` at all: a ``?`` in the password)."""
    head = rest.split("?", 1)[0]
    at = head.rfind("@")
    if at < 0:
        at = rest.rfind("@")
    if at < 0:
        return None, rest
    return rest[:at], rest[at + 1:]


def _redact_parameter(pair: str) -> str:
    from urllib.parse import unquote

    key, mark, _ = pair.partition("=")
    return f"{key}=***" if mark and "password" in unquote(key).lower() else pair
