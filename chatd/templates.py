"""Words for people: config templates that fill only their documented fields, and counts.

``str.format`` on an operator's template would also evaluate ``{nick.__class__}``
(attribute access), ``{room[0]}`` (indexing) and ``{nick:>999999999}`` (a
megabyte-wide padding): a template is data, so it gets exactly its named
fields, as plain text, and nothing else.  And it is shown to people, so it may
not hide or reorder text (no control, invisible or bidi characters).
"""

from __future__ import annotations

import string

from .config import shown_text_problem

_FORMATTER = string.Formatter()


def template_problem(template: str, fields: tuple[str, ...]) -> str | None:
    """Why ``template`` is not a valid template with ``fields``, or None.

    A template is text users see, so control, invisible and bidi characters are
    refused too (:func:`chatd.config.shown_text_problem`).
    """
    problem = shown_text_problem(template)
    if problem:
        return problem
    allowed = ", ".join("{" + name + "}" for name in fields)
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        return f"bad template ({exc}); use {{{{ and }}}} for literal braces"
    for _text, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in fields:
            return f"unknown field {{{name}}}; a template may use only {allowed}"
        if spec or conversion:
            return f"{{{name}}} takes no format or conversion here; use just {{{name}}}"
    return None


def fill(template: str, **values: str) -> str:
    """``template`` with its fields replaced (check it with :func:`template_problem` first)."""
    out = []
    for text, name, _spec, _conversion in _FORMATTER.parse(template):
        out.append(text)
        if name is not None:
            out.append(str(values[name]))
    return "".join(out)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun`` as a person writes them: ``1 client``, ``2 clients``,
    ``0 clients`` (``many``: the plural when it is not ``noun + "s"``)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def how_long(seconds: float | None) -> str:
    """`` for 2 h``: a ban's or mute's time in the largest unit it is a whole number of
    (the words moderation logs and the line protocol shows); ``""`` for one that lasts
    until lifted."""
    if seconds is None:
        return ""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f" for {int(seconds // size)} {unit}"
    return f" for {int(seconds)} s"
