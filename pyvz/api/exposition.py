"""The Prometheus text exposition format, version 0.0.4: families of samples with labels.

https://prometheus.io/docs/instrumenting/exposition_formats/ — a family is `# HELP`, `# TYPE`
and its samples, all together; in a label value a backslash, a double quote and a newline
are written \\\\, \\" and \\n; in HELP text a backslash and a newline. Label values here
come from CT configs (names, host names), so every one goes through label_value().
"""

from __future__ import annotations

import math
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    """`a="x",b="y"`: the inside of a sample's braces."""
    return ",".join(f'{key}="{label_value(value)}"' for key, value in pairs)


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class Family:
    """One metric: its samples in the order added."""

    __slots__ = ("help", "kind", "lines", "name")

    def __init__(self, name: str, kind: str, help: str) -> None:
        self.name, self.kind, self.help = name, kind, help
        self.lines: list[str] = []

    def add(self, value: float, *label_sets: str) -> None:
        """`label_sets`: pre-rendered labels() strings, joined (empty ones left out)."""
        if len(label_sets) == 1:  # most samples: a CT's own labels alone
            braces = "{" + label_sets[0] + "}" if label_sets[0] else ""
        else:
            inside = ",".join(part for part in label_sets if part)
            braces = "{" + inside + "}" if inside else ""
        self.lines.append(f"{self.name}{braces} {number(value)}")

    def text(self) -> str:
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        head = f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.kind}\n"
        return head + "\n".join(self.lines) + "\n" if self.lines else head
