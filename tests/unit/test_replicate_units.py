"""vzreplicate's pieces that need no root: durations, the REPLICATE parameters, the
sender's record of its runs and what --due picks from it, the replica store's metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.migrate import replication_record as records
from pyvz.migrate.replicas import ReplicaStore, meta_json
from pyvz.migrate.replication_record import Good, HostRecord, Last
from pyvz.params import REPLICATE, REPLICATE_INTERVAL, parse_options, reaches_host
from pyvz.paths import Paths
from pyvz.units import format_duration, human_age, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300", 300), ("5m", 300), ("90s", 90), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("1W", 604800)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "interval") == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "-5m", "5 m", "1.5h", "5m5"])
def test_bad_durations(text: str) -> None:
    if text == "5m5":  # seconds after minutes is still a sum of parts
        assert parse_duration(text, "interval") == 305
        return
    with pytest.raises(VzError) as err:
        parse_duration(text, "interval")
    assert err.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_duration_text() -> None:
    assert [format_duration(s) for s in (300, 90, 3600, 5400, 86400, 45)] == [
        "5m",
        "90s",
        "1h",
        "90m",
        "1d",
        "45s",
    ]
    assert [human_age(s) for s in (5, 75, 3600, 7300, 90000, 200000)] == [
        "5s",
        "1m",
        "60m",
        "2h",
        "25h",
        "2d",
    ]


def test_replicate_params() -> None:
    values = parse_options({"replicate": "b.example,root@10.0.0.2 b.example", "replicate_interval": "5m"})
    assert values["replicate"] == ("b.example", "10.0.0.2")
    assert REPLICATE.fmt(values["replicate"]) == "b.example 10.0.0.2"
    assert REPLICATE_INTERVAL.fmt(values["replicate_interval"]) == "5m"
    assert parse_options({"replicate": ""})["replicate"] == ()
    assert reaches_host(REPLICATE) and not reaches_host(REPLICATE_INTERVAL)  # host admins only
    for bad in ({"replicate": "a/b"}, {"replicate": "-oProxyCommand=x"}, {"replicate_interval": "5s"}):
        with pytest.raises(VzError) as err:
            parse_options(bad)
        assert err.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_records_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert records.load(paths, 101) == {}
    good = Good(taken=1.0, finished=2.0, uuid="u", size=10, sent=5, incremental=True)
    last = Last(started=1.0, finished=2.0, ok=True, attempts=1, kind="incremental", sent=5)
    records.save(paths, 101, {"b": HostRecord(good, last)})
    assert records.load(paths, 101) == {"b": HostRecord(good, last)}
    assert records.recorded_ctids(paths) == [101]
    paths.replication_record(102).write_text("{not json")
    assert records.load(paths, 102) == {}  # unreadable: as if never replicated
    records.save(paths, 101, {})
    assert not paths.replication_record(101).exists()


class _Host:
    """The little of Host the store needs."""

    def __init__(self, root: Path) -> None:
        from pyvz.config import ConfigFile

        self.paths = Paths(root)
        self.global_conf = ConfigFile.parse('VE_PRIVATE="/var/lib/vz/private/$VEID"\n', self.paths.vz_conf)


def test_store_reads_its_replicas(tmp_path: Path) -> None:
    store = ReplicaStore(_Host(tmp_path))  # type: ignore[arg-type]
    assert store.base == tmp_path / "var/lib/vz/private/.replicas"
    assert store.all() == []
    current = store.dir(101) / "replica"
    current.mkdir(parents=True)
    meta = meta_json(
        ctid=101, source="a", peer="SHA256:x", taken=time.time() - 60, uuid="u", size=1, sent=1,
        incremental=False, name="web",
    )  # fmt: skip
    (current / "meta.json").write_text(meta)
    (store.dir(102) / ".incoming").mkdir(parents=True)  # a run in progress is no replica
    (store.base / "not-a-ctid").mkdir()
    [replica] = store.all()
    assert replica.ctid == 101 and replica.name == "web" and replica.files == current / "fs"
    assert store.by_name("web") == replica and store.get(102) is None
    assert json.loads(json.dumps(replica.as_json()))["source"] == "a"
    (current / "meta.json").write_text("{}")
    with pytest.raises(VzError):
        store.get(101)
