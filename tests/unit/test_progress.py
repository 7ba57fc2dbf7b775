"""The one progress line of downloads and migrations (pyvz/progress.py)."""

from __future__ import annotations

import io

import pytest

from pyvz import progress
from pyvz.log import log
from pyvz.progress import Progress
from pyvz.units import human_size


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    # In the test itself: pytest's capture sets sys.stderr again after fixtures are set up.
    screen = Terminal()
    monkeypatch.setattr(progress.sys, "stderr", screen)
    monkeypatch.setattr(log, "quiet", False)
    return screen


def test_a_known_size_shows_percent_and_the_last_line_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _terminal(monkeypatch)
    bar = Progress("debian-12", 4 << 20)
    bar.update(1 << 20)
    bar.update(2 << 20)  # within 0.2 s of the last one: not drawn
    bar.update(4 << 20)  # the end is always drawn
    bar.close()
    assert terminal.getvalue() == (
        "\rdebian-12:  25% (1.0M of 4.0M)\x1b[K\rdebian-12: 100% (4.0M of 4.0M)\x1b[K\n"
    )


def test_an_unknown_size_counts_what_was_added(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _terminal(monkeypatch)
    monkeypatch.setattr(progress, "REDRAW_EVERY", 0.0)
    bar = Progress()
    bar.start("final")
    bar.add(1536)
    bar.add(1536)
    bar.close()
    assert terminal.getvalue() == "\rfinal: 1.5K sent\x1b[K\rfinal: 3.0K sent\x1b[K\n"


def test_nothing_is_drawn_under_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _terminal(monkeypatch)
    monkeypatch.setattr(log, "quiet", True)
    bar = Progress("x", 10)
    bar.update(10)
    bar.close()
    assert terminal.getvalue() == ""


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (1536 << 10, "1.5M"),
        (5 << 30, "5.0G"),
        (1 << 40, "1024.0G"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text
