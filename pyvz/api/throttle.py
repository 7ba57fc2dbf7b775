"""Repeated failed authentication is slowed down: each failure from an address within the
window doubles the wait before its next answer (0.25 s, 0.5 s, … up to 8 s), and after
MAX_FAILURES the address gets 429 until the window has passed."""

from __future__ import annotations

import time

WINDOW = 600.0  # seconds a failure counts
MAX_FAILURES = 30
FIRST_DELAY = 0.25
MAX_DELAY = 8.0


class Throttle:
    def __init__(self) -> None:
        self.failures: dict[str, list[float]] = {}

    def _recent(self, address: str) -> list[float]:
        now = time.monotonic()
        kept = [t for t in self.failures.get(address, []) if now - t < WINDOW]
        if kept:
            self.failures[address] = kept
        else:
            self.failures.pop(address, None)
        return kept

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= MAX_FAILURES

    def delay(self, address: str) -> float:
        """How long to wait before answering this address's next failure."""
        count = len(self._recent(address))
        return 0.0 if count == 0 else min(MAX_DELAY, FIRST_DELAY * 2 ** (count - 1))

    def failed(self, address: str) -> None:
        self._recent(address)
        self.failures.setdefault(address, []).append(time.monotonic())
        if len(self.failures) > 100000:  # a flood of addresses: forget the oldest
            oldest = min(self.failures, key=lambda a: self.failures[a][-1])
            del self.failures[oldest]

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)
