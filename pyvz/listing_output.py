"""vzlist's output: the field list of -o, the sort, the table and the JSON, laid out byte
for byte as vzlist 4.11 lays them out (its build_field_order, print_hdr, print_one_ve and
print_one_ve_json)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from pyvz.errors import ExitCode, VzError
from pyvz.listing import Record
from pyvz.listing_fields import FIELDS, VZLIST_FIELDS, Field

_BLANKS = " \t\n\v\f\r"  # isspace(): what vzlist trims off the end of a line


def parse_fields(text: str, for_json: bool) -> list[Field]:
    """-o's comma-separated names, read as vzlist reads them: a trailing comma is fine, an
    empty name is not, and a name longer than 30 characters is refused with the rest."""
    fields, at = [], 0
    while True:
        comma = text.find(",", at)
        end = len(text) if comma < 0 else comma
        name = text[at:end]
        if len(name) > 30:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Invalid field: {text[at:]}")
        field = FIELDS.get(name)
        if field is None:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Unknown field: {name}")
        if for_json and field.suffixed:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Field `{name}' is not available in JSON output")
        fields.append(field)
        at = end + 1
        if at >= len(text):
            return fields


def sort_field(text: str) -> tuple[Field, bool]:
    """-s [-]NAME: the field and whether the order is reversed."""
    field = FIELDS.get(text[1:] if text.startswith("-") else text)
    if field is None:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Invalid sort field name: {text}")
    return field, text.startswith("-")


def ordered(records: Sequence[Record], field: Field | None, reverse: bool) -> list[Record]:
    """Stable on records in CTID order, as vzlist's merge sort is; -s -NAME prints the
    sorted list backwards."""
    result = sorted(records, key=field.key) if field is not None else list(records)
    return result[::-1] if reverse else result


def field_names() -> list[str]:
    """-L: every field with its header."""
    return [f"{field.name:<15} {field.header:<15}" for field in VZLIST_FIELDS]


def header(fields: Sequence[Field]) -> str:
    return " ".join(field.head() for field in fields).rstrip(_BLANKS)


def row(fields: Sequence[Field], record: Record, trim: bool) -> str:
    """One table line: each column but the last cut where vzlist cuts it, unless -t."""
    last = len(fields) - 1
    cells = (field.cell(record, trim and index != last) for index, field in enumerate(fields))
    return " ".join(cells).rstrip(_BLANKS)


def json_lines(fields: Sequence[Field] | None, records: Iterable[Record]) -> str:
    """The JSON text: with no -o, every field that has no suffix, in vzlist's order."""
    chosen = fields if fields is not None else [f for f in VZLIST_FIELDS if not f.suffixed]
    entries = []
    for record in records:
        body = ",".join(f"\n    {json.dumps(field.name)}: {field.json(record)}" for field in chosen)
        entries.append("\n  {" + body + "\n  }")
    return "[" + ",".join(entries) + "\n]\n"
