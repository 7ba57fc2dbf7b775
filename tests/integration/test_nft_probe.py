"""The kernel is asked whether a CT's nftables table exists before nft is run to delete it
(destroy of a stopped CT has none): the answer must be the truth, in a namespace of the
test's own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import REPO
from tests.parallel import unique_name

pytestmark = pytest.mark.root

PROBE = "import sys; from pyvz.net.firewall import has_table; print(has_table(sys.argv[1], sys.argv[2]))"


@pytest.fixture
def netns() -> Iterator[str]:
    name = unique_name("pyvz-nft")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def in_ns(netns: str, *argv: str) -> str:
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", *argv], capture_output=True, text=True, timeout=30, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def probe(netns: str, family: str, table: str) -> str:
    return in_ns(netns, sys.executable, "-c", PROBE, family, table)


def test_has_table_tells_the_truth(netns: str) -> None:
    assert probe(netns, "inet", "pyvz_probe_ct101") == "False"
    in_ns(netns, "nft", "add table inet pyvz_probe_ct101")
    assert probe(netns, "inet", "pyvz_probe_ct101") == "True"
    assert probe(netns, "bridge", "pyvz_probe_ct101") == "False"  # another family's is another table
    assert probe(netns, "inet", "pyvz_probe_ct10") == "False"  # no prefix match
    in_ns(netns, sys.executable, "-c", "from pyvz.net.firewall import remove; remove('pyvz_probe_ct101')")
    assert probe(netns, "inet", "pyvz_probe_ct101") == "False"
    assert "pyvz_probe" not in in_ns(netns, "nft", "list tables")
