"""The configuration reference (docs/config.md), rendered from the rows the loader checks.

Generated rather than hand-written so the docs cannot drift from what the loader
actually accepts: every key's type, default, allowed values and doc come from
the same :class:`~chatd.config_rules._FieldSpec` rows :func:`~chatd.config_rules._check`
uses.  The schema (:mod:`chatd.config`) says which sections there are, in
which order, and what to write around them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .config_rules import TYPE_WORDS, FieldSpec, bounds_text, rules_text


@dataclass(frozen=True, slots=True)
class Section:
    """One ``##`` section: a table of settings (``specs``), or a paragraph alone."""

    name: str
    doc: str
    specs: Mapping[str, FieldSpec] | None = None
    #: A paragraph between the doc and the table.
    note: str = ""
    #: Sub-sections shown as rows of this table: (key, doc); each has a section below.
    nested: tuple[tuple[str, str], ...] = ()
    #: The heading, if not the name in backquotes (the keys still start with ``name``:
    #: a protocol's options are ``listen.KEY`` under "`listen` with `protocol: line`").
    title: str = ""


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _row(section: str, spec: FieldSpec) -> str:
    kind = TYPE_WORDS[spec.kind][1] + (" or null" if spec.optional else "")
    allowed = "; ".join(
        part for part in (bounds_text(spec.constraint), rules_text(spec)) if part
    )
    return (f"| `{section}.{spec.name}` | {kind} | `{json.dumps(spec.default)}` "
            f"| {_cell(allowed) or 'any'} | {_cell(spec.doc)} |")


def render_reference(intro: Sequence[str], sections: Sequence[Section],
                     outro: Sequence[str]) -> str:
    """Markdown: ``intro`` lines, then every section, then ``outro`` lines."""
    lines = list(intro)
    for section in sections:
        heading = f"## {section.title or f'`{section.name}`'}"
        if section.specs is None:
            lines += [heading, "", _cell(section.doc), ""]
            continue
        lines += [
            heading,
            "",
            _cell(section.doc),
            "",
            "| Key | Type | Default | Allowed | Description |",
            "| --- | --- | --- | --- | --- |",
        ]
        if section.note:
            lines[-3:-3] = [section.note, ""]
        lines += [_row(section.name, spec) for spec in section.specs.values()]
        for key, doc in section.nested:
            lines.append(f"| `{section.name}.{key}` | mapping or null | `null` "
                         f"| `{section.name}[].{key}` below | {_cell(doc)} |")
        lines.append("")
    lines += outro
    return "\n".join(lines)
