"""The broker's registry table and the clone-pattern mirror every actor keeps."""

from __future__ import annotations

from bus.registry import Registry, RegistryMirror
from bus.schema.system import Registration, RegistryChange, Update


def reg(actor_id: str, kind: str = "loopback", load: float = 0.0) -> Registration:
    return Registration(actor_id=actor_id, kind=kind, host="h", pid=1, load=load)


def test_register_update_remove_bump_the_version() -> None:
    r = Registry("e1", expiry_s=3.0)
    assert r.register(reg("a"), b"id-a", 0.0).change is RegistryChange.ADDED
    assert r.register(reg("a"), b"id-a2", 0.0).change is RegistryChange.UPDATED  # new socket
    assert r.actor_for(b"id-a") is None and r.actor_for(b"id-a2") == "a"
    ev = r.update(b"id-a2", Update(load=0.5), 1.0)
    assert ev is not None and ev.registration.load == 0.5 and ev.version == 3
    assert r.update(b"unknown", Update(load=0.1), 1.0) is None
    ev = r.remove(b"id-a2", "disconnect")
    assert ev is not None and ev.change is RegistryChange.REMOVED and ev.version == 4
    assert len(r) == 0


def test_silent_actors_expire_and_heard_ones_stay() -> None:
    r = Registry("e1", expiry_s=3.0)
    r.register(reg("a"), b"a", 0.0)
    r.register(reg("b"), b"b", 0.0)
    assert r.touch(b"b", 2.5)
    assert not r.touch(b"nobody", 2.5)
    gone = r.expire(3.1)
    assert [e.registration.actor_id for e in gone] == ["a"]
    assert gone[0].reason == "expired"
    assert [e.registration.actor_id for e in r.entries()] == ["b"]


def test_snapshot_filters_by_kind() -> None:
    r = Registry("e1", expiry_s=3.0)
    r.register(reg("a", kind="tts_worker"), b"a", 0.0)
    r.register(reg("b", kind="gateway"), b"b", 0.0)
    snap = r.snapshot("gateway")
    assert [x.actor_id for x in snap.actors] == ["b"] and snap.version == 2


def test_mirror_follows_snapshot_then_events_and_replays_early_ones() -> None:
    source = Registry("e1", expiry_s=3.0)
    mirror = RegistryMirror()
    seen: list[tuple[RegistryChange, str]] = []
    mirror.listen(lambda change, r: seen.append((change, r.actor_id)))
    source.register(reg("a"), b"a", 0.0)
    snap = source.snapshot()
    early = source.register(reg("b"), b"b", 0.0)  # published before the snapshot arrived
    assert mirror.apply_event(early)
    assert not mirror.synced
    mirror.apply_snapshot(snap)
    assert {r.actor_id for r in mirror.alive()} == {"a", "b"}
    assert mirror.apply_event(source.update(b"a", Update(load=0.9), 1.0))
    assert mirror.get("a").load == 0.9
    assert mirror.apply_event(source.remove(b"b", "disconnect"))
    assert mirror.get("b") is None
    assert seen == [
        (RegistryChange.ADDED, "a"),
        (RegistryChange.ADDED, "b"),
        (RegistryChange.UPDATED, "a"),
        (RegistryChange.REMOVED, "b"),
    ]


def test_mirror_asks_for_a_snapshot_after_a_gap_or_a_new_broker() -> None:
    source = Registry("e1", expiry_s=3.0)
    mirror = RegistryMirror()
    mirror.apply_snapshot(source.snapshot())
    source.register(reg("a"), b"a", 0.0)  # this event is lost
    assert not mirror.apply_event(source.register(reg("b"), b"b", 0.0))
    restarted = Registry("e2", expiry_s=3.0)
    assert not mirror.apply_event(restarted.register(reg("a"), b"a", 0.0))
    assert not mirror.synced
    mirror.apply_snapshot(restarted.snapshot())
    assert mirror.epoch == "e2" and [r.actor_id for r in mirror.alive()] == ["a"]
