"""The snapshot index: parents, the current mark, deletion as a merge, and the sweep of
what an interrupted command left behind (on real directories, with the dir driver)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.ct.snapshots import Snapshot, Store, listing_rows, parse_fields, parse_uuid, shown
from pyvz.errors import VzError
from pyvz.storage.base import Area
from pyvz.storage.idmap import IdMap
from pyvz.storage.overlay import OverlayDriver

A, B, C = (f"0a1b2c3d-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(Area(tmp_path / "101", tmp_path / "root/101", IdMap(0, 0)))


def snap(uuid: str, parent: str = "", name: str = "") -> Snapshot:
    return Snapshot(uuid, parent, "2026-11-29 12:00:00", name, "")


def test_uuids_with_or_without_braces() -> None:
    assert parse_uuid("{0A1B2C3D-0000-4000-8000-000000000001}") == A
    assert parse_uuid(A) == A
    assert shown(A) == f"{{{A}}}" and shown("") == ""
    for bad in ("", "0a1b2c3d", "{" + A, A + "0", "zz1b2c3d-0000-4000-8000-000000000001"):
        with pytest.raises(VzError) as err:
            parse_uuid(bad)
        assert err.value.code == 21


def test_add_marks_current_and_delete_merges_history(store: Store) -> None:
    assert store.all() == [] and store.current == ""
    store.add(snap(A))
    store.add(snap(B, A))
    store.add(snap(C, B))
    assert store.current == C
    store.remove(B)  # the middle one: C now grows from A
    assert [(s.uuid, s.parent) for s in store.all()] == [(A, ""), (C, A)]
    assert store.current == C
    store.set_current(A)
    store.remove(A)  # the current one: the present state now grows from its parent (none)
    assert store.current == "" and [(s.uuid, s.parent) for s in store.all()] == [(C, "")]
    with pytest.raises(VzError):
        store.get(A)


def test_sweep_removes_what_the_index_does_not_name(store: Store) -> None:
    store.add(snap(A))
    (store.dir / A / "fs").mkdir(parents=True)
    (store.dir / f".{B}.partial" / "fs").mkdir(parents=True)  # a snapshot killed halfway
    (store.dir / C / "fs").mkdir(parents=True)  # deleted from the index, files not yet gone
    store.sweep(OverlayDriver())
    assert sorted(p.name for p in store.dir.iterdir()) == sorted([A, "snapshots.json"])


def test_listing_columns(store: Store) -> None:
    store.add(snap(A, name="before"))
    store.add(snap(B, A, name="after"))
    lines = listing_rows(store, parse_fields(None), header=True, only=None)
    assert lines[0].split() == ["PARENT_UUID", "C", "UUID", "DATE", "NAME"]
    assert lines[1].split() == [shown(A), "2026-11-29", "12:00:00", "before"]
    assert lines[2].split() == [shown(A), "*", shown(B), "2026-11-29", "12:00:00", "after"]
    assert listing_rows(store, ("uuid",), header=False, only=B) == [shown(B)]
    with pytest.raises(VzError) as err:
        parse_fields("uuid,size")
    assert err.value.code == 21  # vzctl snapshot-list: a bad -o value


def test_new_uuids_are_random_version_4() -> None:
    import uuid

    from pyvz.ct.snapshots import new_uuid

    made = {new_uuid() for _ in range(100)}
    assert len(made) == 100
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122) and str(parsed) == text
        assert parse_uuid(text) == text
