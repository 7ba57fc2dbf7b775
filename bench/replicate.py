"""vzreplicate between two test hosts (network namespaces with their own root and sshd, see
tests/testhosts.py).

incremental  `vzreplicate run CT` of a stopped CT holding 1 GB (20 files of 50 MB) after 10 MB
             of it was rewritten in place (1 MB in each of 10 files, untimed before each run),
             vs a full run of the same CT: `vzreplicate run CT` after an untimed
             `vzreplicate remove CT HOST` has dropped the replica on both ends, so the same
             code sends the CT whole. Both are the command's wall time; it returns once the
             standby has synced the new replica and swapped it in. What each run sent (the
             sender's own count, `vzreplicate status -j`) goes into the notes. The standby
             trusts the key through the installed `vzmigrate` launcher, as a real host does
             (its forced command then starts Python with -IS).

Three times: with ssh's default key exchange (OpenSSH 9's post-quantum sntrup761x25519,
~0.14 s of each connection here), with REPLICATE_SSH="-o KexAlgorithms=curve25519-sha256",
and with REPLICATE_SSH_PERSIST=10m (one SSH connection per standby kept between runs): an
incremental run of a CT that barely changed is mostly its fixed costs (the SSH handshake,
two Python starts), so these show in the ratio. pyvz's defaults are the first.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bench.harness import COMMAND_TIMEOUT, VENV_BIN, CommandFailed, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context
    from tests.testhosts import TestHost

CT = "111"
FILES, FILE_MB, CHANGED_MB = 20, 50, 10
HOST_POOL = "10G"  # the CT, its replica and a full run's new one, with btrfs's lazy cleanup


def _ok(host: TestHost, argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
    done = host.run(argv, timeout=timeout)
    if done.code != 0:
        raise CommandFailed([*host.enter, *argv], done.code, done.out, done.err)
    return done.out + done.err


def _tool(host: TestHost, tool: str, *args: str) -> str:
    return _ok(host, [sys.executable, "-m", f"pyvz.cli.{tool}", *args])


@contextmanager
def _hosts() -> Iterator[list[TestHost]]:
    from tests.testhosts import host_network

    with host_network(2) as hosts:
        for host in hosts:
            conf = host.root.root / "etc/vz/vz.conf"
            conf.write_text(
                re.sub(r"^POOL_SIZE=.*$", f'POOL_SIZE="{HOST_POOL}"', conf.read_text(), flags=re.M)
            )
        a, b = hosts
        line = _tool(a, "vzmigrate", "--pubkey").strip()
        _ok(
            b, [str(VENV_BIN / "vzmigrate"), "--authorize", line, "--authorized-keys", str(b.authorized_keys)]
        )
        yield hosts


def _fill(a: TestHost) -> None:
    data = a.root.private_dir / CT / "srv/bench-data"
    data.mkdir(parents=True)
    for index in range(FILES):
        _ok(
            a, ["dd", "if=/dev/urandom", f"of={data}/file{index}", "bs=1M", f"count={FILE_MB}", "status=none"]
        )
    os.sync()


def _change(a: TestHost, round_number: int) -> None:
    """10 MB rewritten in place, 1 MB in each of 10 files, at a new offset each round."""
    data = a.root.private_dir / CT / "srv/bench-data"
    for index in range(CHANGED_MB):
        seek = (round_number * 7 + index * 3) % FILE_MB
        _ok(
            a,
            ["dd", "if=/dev/urandom", f"of={data}/file{index}", "bs=1M", "count=1", f"seek={seek}",
             "conv=notrunc", "status=none"],
        )  # fmt: skip
    os.sync()


def _status(a: TestHost) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(_tool(a, "vzreplicate", "status", CT, "-j"))
    return rows[0]


# label: (more ssh options, vz.conf REPLICATE_SSH_PERSIST); the kept connection goes last
VARIANTS = {
    "default key exchange": ("", ""),
    "curve25519 key exchange": ("-o KexAlgorithms=curve25519-sha256", ""),
    "a kept SSH connection, REPLICATE_SSH_PERSIST=10m": ("", "10m"),
}


def bench_replicate(ctx: Context) -> list[Row]:
    from tests.integration.test_migrate import ssh_options

    count = 2 if ctx.n.create < 10 else 5
    rows = []
    with _hosts() as (a, b):
        _tool(a, "vzctl", "create", CT, "--hostname", "replicated")
        _fill(a)
        _tool(a, "vzctl", "set", CT, "--replicate", b.address, "--save")
        rounds = iter(range(1000))
        for label, (kex, persist) in VARIANTS.items():
            if persist:
                conf = a.root.root / "etc/vz/vz.conf"
                conf.write_text(conf.read_text() + f'REPLICATE_SSH_PERSIST="{persist}"\n')
            ssh = f"--ssh={ssh_options(a)} {kex}".rstrip()
            log(f"replicate: {label}")
            _tool(a, "vzreplicate", "remove", ssh, CT, b.address)
            _tool(a, "vzreplicate", "run", ssh, CT)  # a full run first: the parent of the next
            sent: dict[str, list[int]] = {"incremental": [], "full": []}
            size: list[int] = []

            def run(
                kind: str, ssh: str = ssh, sent: dict[str, list[int]] = sent, size: list[int] = size
            ) -> float:
                start = time.perf_counter()
                _tool(a, "vzreplicate", "run", ssh, CT)
                elapsed = time.perf_counter() - start
                row = _status(a)
                if row["kind"] != kind:
                    raise RuntimeError(f"a {kind} run was {row['kind']}: {row}")
                sent[kind].append(int(row["sent"]))
                size.append(int(row["size"]))
                log(f"  {kind}: {elapsed:.2f} s, {row['sent'] / 1048576:.1f} MB sent")
                return elapsed

            def incremental(run: Any = run) -> float:
                _change(a, next(rounds))
                return float(run("incremental"))

            def full(run: Any = run, ssh: str = ssh) -> float:
                _tool(a, "vzreplicate", "remove", ssh, CT, b.address)
                os.sync()
                return float(run("full"))

            ours, theirs = alternate(count, incremental, full, f"replication run, {label}")
            rows.append(
                Row(
                    f"replication run, 1 GB CT with {CHANGED_MB} MB changed vs a full send of it ({label})",
                    "ratio",
                    "≤ 5%",
                    ours,
                    theirs,
                    limit=0.05,
                    notes={
                        "pyvz": f"vzreplicate run CT after {CHANGED_MB} x 1 MB rewritten in place (send -p)",
                        "peer": "vzreplicate run CT after vzreplicate remove CT HOST (a full btrfs send)",
                        "ssh": kex or "ssh's defaults",
                        "REPLICATE_SSH_PERSIST": persist or None,
                        "bytes_sent": sent,
                        "ct_bytes": size,
                    },
                )
            )
    return rows
