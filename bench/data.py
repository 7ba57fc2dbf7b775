"""A deterministic tree of mixed files for the storage benchmarks (issue 6): many small text
files, medium files that compress well and badly, and a few large files with holes."""

from __future__ import annotations

import os
import random
from pathlib import Path

GB = 1 << 30
SMALL_FILES, SMALL_SIZE = 20000, 4096  # 80 MB of source-like text in 200 directories
MEDIUM_FILES, MEDIUM_SIZE = 200, 1 << 20  # 200 MB, half random, half text
LARGE_FILES = 4  # the rest, in large files of random blocks with a hole in the middle


def fill_mixed(root: Path, total: int = GB, seed: int = 6) -> int:
    """Write ~`total` bytes under `root`; returns the bytes written. Same seed, same tree."""
    rng = random.Random(seed)
    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(200))
    written = 0
    for index in range(SMALL_FILES):
        directory = root / "src" / f"d{index % 200:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:05d}.txt").write_bytes(text[:SMALL_SIZE])
        written += SMALL_SIZE
    (root / "media").mkdir(parents=True, exist_ok=True)
    for index in range(MEDIUM_FILES):
        data = (
            rng.randbytes(MEDIUM_SIZE) if index % 2 else (text * (MEDIUM_SIZE // len(text) + 1))[:MEDIUM_SIZE]
        )
        (root / "media" / f"m{index:03d}.bin").write_bytes(data)
        written += MEDIUM_SIZE
    large = max(0, (total - written) // LARGE_FILES)
    (root / "large").mkdir(parents=True, exist_ok=True)
    block = 1 << 20
    for index in range(LARGE_FILES):
        with open(root / "large" / f"big{index}.img", "wb") as handle:
            for offset in range(0, large, block):
                if large // 3 <= offset < large // 3 + 16 * block:
                    continue  # a 16 MB hole: sparse files must stay sparse
                handle.seek(offset)
                handle.write(os.urandom(min(block, large - offset)))
            handle.truncate(large)
        written += large
    return written
