"""vzps's work: the host's procps `ps`, with a CTID column and a choice of one CT's processes.

ps does the selecting, sorting and formatting; pyvz only needs the PID of each line, which
it gets in one of two ways, so that the rest of the line is exactly what ps printed:

- A format of ps's own (none, -f, -F, -l, -j, u, v, j, s, aux, -O, ...): each of these has a
  PID column with no column before it that can hold a blank, so the PID is the field under
  the header's `PID`. A no-header request (h, --no-headers) is taken off and the header
  line dropped here, because the header is what finds the column.
- A format the user gives (-o, o, --format): a header-less `pid` column is put in
  front of it and taken off each line again. In these the CTID column appears only where
  the format names `ctid` (or OpenVZ's `veid`), and then in front: `vzps -E 0 -o pid= -C
  syslogd` prints bare PIDs, fit for `kill $(...)`.

A line whose process has gone by the time pyvz reads its cgroup shows `-` as its CTID and
is left out when a CT is selected: nobody can say any more where it ran.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyvz.errors import ExitCode, VzError
from pyvz.resources.ctprocs import Gone, Owner, label, owner_of

_FORMAT_LONG = ("--format",)
_VALUE_LONG = frozenset(
    {"--cols", "--columns", "--width", "--lines", "--rows", "--group", "--Group", "--pid", "--ppid",
     "--quick-pid", "--sid", "--sort", "--tty", "--user", "--User", "--format", "--context"}
)  # fmt: skip
_NO_HEADER_LONG = frozenset({"--no-headers", "--no-heading"})
_UNIX_VALUE = "CGgOopqstUun"  # -X letters that take a value (the rest of the word or the next)
_BSD_VALUE = "OopqtUk"
_CTID_FIELDS = frozenset({"ctid", "veid"})
# What selects processes (ps's selections add up); without any, ps shows the terminal's own.
_UNIX_SELECT = frozenset("AaCdeGgpqstUu")
_BSD_SELECT = frozenset("aAgpTtUx")
_SELECT_LONG = frozenset(
    {
        "--pid",
        "--ppid",
        "--sid",
        "--tty",
        "--user",
        "--User",
        "--group",
        "--Group",
        "--quick-pid",
        "--deselect",
    }
)


@dataclass
class PsCommand:
    """The ps command line to run, and how to read what it prints."""

    args: list[str] = field(default_factory=list)
    custom: bool = False  # a user format: our pid column leads each line
    ctid_header: str | None = None  # show the CTID column, under this header
    drop_header: bool = False  # the user asked for no header; ps prints one for us to read
    selects: bool = False  # the user chose which processes (else ps's default: this terminal's)


def _strip_ctid(value: str, cmd: PsCommand) -> str:
    """The format list without its ctid/veid field (noting that one was asked for)."""
    kept: list[str] = []
    rest = value
    while rest:
        rest = rest.lstrip(", ")
        if not rest:
            break
        word = re.match(r"[^, =]*", rest)
        name = word.group(0) if word else ""
        after = rest[len(name) :]
        if after.startswith("="):  # a header runs to the end of the argument
            item, rest = rest, ""
            header: str | None = after[1:]
        else:
            item, rest, header = name, after, None
        if name.lower() in _CTID_FIELDS:
            cmd.ctid_header = "CTID" if header is None else header
        else:
            kept.append(item)
    return ",".join(kept)


def _take_value(argv: list[str], at: int, tail: str) -> tuple[str | None, int]:
    """An option's value: the rest of its word, else the next word."""
    if tail:
        return tail, at + 1
    return (argv[at + 1], at + 2) if at + 1 < len(argv) else (None, at + 1)


def _cluster(argv: list[str], at: int, cmd: PsCommand, dash: bool) -> int:
    """One word of short options, copied into cmd.args with formats and `h` handled."""
    word = argv[at]
    letters = word[1:] if dash else word
    kept = ""
    for index, letter in enumerate(letters):
        cmd.selects |= letter in (_UNIX_SELECT if dash else _BSD_SELECT)
        if letter in (_UNIX_VALUE if dash else _BSD_VALUE):
            value, after = _take_value(argv, at, letters[index + 1 :])
            if letter in "oO":
                # -O leads with ps's own PID column (and may follow no other format): read
                # it as one of ps's formats
                cmd.custom |= letter == "o"
                value = _strip_ctid(value, cmd) if value is not None else None
                if kept:
                    cmd.args.append(("-" if dash else "") + kept)
                if value:  # a list of only ctid leaves nothing for ps
                    cmd.args += [("-" if dash else "") + letter, value]
                return after
            cmd.args.append(("-" if dash else "") + kept + letter)
            if value is not None:
                cmd.args.append(value)
            return after
        if letter == "h" and not dash:
            cmd.drop_header = True
            continue
        kept += letter
    if kept:
        cmd.args.append(("-" if dash else "") + kept)
    return at + 1


def build(argv: list[str], every: bool = False) -> PsCommand:
    """The ps command line for the user's ps options (vzps's own -E already taken off);
    `every`: where the options select no processes, all of them (for -E to choose from)."""
    cmd = PsCommand()
    at = 0
    while at < len(argv):
        word = argv[at]
        name, eq, value = word.partition("=")
        if word.startswith("--"):
            cmd.selects |= name in _SELECT_LONG
            if name in _NO_HEADER_LONG:
                cmd.drop_header = True
                at += 1
                continue
            if name in _VALUE_LONG and not eq and at + 1 < len(argv):
                value, at = argv[at + 1], at + 2
            else:
                at += 1
            if name in _FORMAT_LONG:
                cmd.custom = True
                value = _strip_ctid(value, cmd)
                if value:
                    cmd.args.append(f"{name}={value}")
            elif eq or name in _VALUE_LONG:
                cmd.args.append(f"{name}={value}")
            else:
                cmd.args.append(word)
        elif word.startswith("-") and len(word) > 1:
            at = _cluster(argv, at, cmd, dash=True)
        elif word and word[0].isalpha():
            at = _cluster(argv, at, cmd, dash=False)
        else:
            cmd.args.append(word)  # a bare PID list, as ps takes one
            cmd.selects = True
            at += 1
    if every and not cmd.selects:
        cmd.args[0:0] = ["-e"]
    if cmd.custom:
        cmd.args[0:0] = ["-o", "pid="]
        cmd.drop_header = False  # the user's own `=` headers decide that
    elif cmd.ctid_header is None:
        cmd.ctid_header = "CTID"
    return cmd


class Line:
    """One line of ps's output: its PID (None: a header) and the text the user sees."""

    def __init__(self, pid: int | None, text: str) -> None:
        self.pid, self.text = pid, text


def _split_custom(lines: list[str]) -> list[Line]:
    leads = [re.match(r" *(\d+) ", line) or re.fullmatch(r" *(\d+)", line) for line in lines]
    widths = [m.end(1) for m in leads if m is not None]
    width = min(widths) if widths else 5  # procps's PID width; a header alone cannot tell
    out = []
    for line, lead in zip(lines, leads, strict=True):
        if lead is not None:
            out.append(Line(int(lead.group(1)), line[lead.end() :]))
        else:
            out.append(Line(None, line[width + 1 :]))
    return out


def _split_standard(lines: list[str]) -> list[Line] | None:
    """None when the header has no PID column (ps printed help or a list of fields)."""
    if not lines or "PID" not in lines[0].split():
        return None
    column, header = lines[0].split().index("PID"), lines[0]
    out = []
    for line in lines:
        fields = line.split(None, column + 1)
        if line == header or len(fields) <= column or not fields[column].isdigit():
            out.append(Line(None, line))
        else:
            out.append(Line(int(fields[column]), line))
    return out


@dataclass
class Shown:
    text: str
    rows: int  # process lines left after the selection


def annotate(cmd: PsCommand, stdout: str, selected: list[Owner | None] | None, tag: str) -> Shown:
    """ps's output with the CTID column added and only the selected owners' lines kept."""
    raw = stdout.splitlines()
    lines = _split_custom(raw) if cmd.custom else _split_standard(raw)
    if lines is None:
        if selected is not None:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "-E needs ps output with a PID column")
        return Shown(stdout, len(raw))
    labels: list[str | None] = []
    kept: list[Line] = []
    for line in lines:
        if line.pid is None:
            if not cmd.drop_header:
                kept.append(line)
                labels.append(None)
            continue
        try:
            owner = owner_of(line.pid)
        except Gone:
            if selected is not None:
                continue
            kept.append(line)
            labels.append("-")
            continue
        if selected is not None and owner not in selected:
            continue
        kept.append(line)
        labels.append(label(owner, tag))
    rows = sum(1 for line in kept if line.pid is not None)
    if cmd.ctid_header is None:
        return Shown("".join(line.text + "\n" for line in kept), rows)
    width = max([len(cmd.ctid_header), *(len(text) for text in labels if text is not None)])
    out = []
    for line, text in zip(kept, labels, strict=True):
        cell = cmd.ctid_header if text is None else text
        out.append(f"{cell:>{width}} {line.text}\n")
    return Shown("".join(out), rows)
