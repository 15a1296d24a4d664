"""Typed configuration for the broker and actors, built in one place from topology.yaml + CLI.

Handlers never read YAML or click objects: they get these frozen dataclasses.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bus.envelope import new_id


class TopologyError(ValueError):
    """topology.yaml is missing, malformed, or names something that does not exist."""


@dataclass(frozen=True, slots=True)
class CurveConfig:
    """CURVE settings. Off by default (loopback); turn on for traffic between hosts."""

    enabled: bool = False
    keys_dir: Path = Path("keys")
    """Folder holding key files."""
    broker_key: str = "broker"
    """Base name of the broker's key files (``broker.key`` is what actors need)."""
    actor_key: str = "actor"
    """Base name of this actor's key files (``actor.key_secret``)."""
    allow_dir: Path = Path("keys/allowed")
    """Folder of the public ``*.key`` files the broker (and actor inboxes) admit."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker listens and how it judges liveness."""

    control: str = "tcp://127.0.0.1:5550"
    """ROUTER endpoint: READY / HEARTBEAT / DISCOVER / DESCRIBE."""
    events_in: str = "tcp://127.0.0.1:5551"
    """XSUB endpoint actors publish to."""
    events_out: str = "tcp://127.0.0.1:5552"
    """XPUB endpoint actors subscribe to."""
    heartbeat_ms: int = 1000
    """Heartbeat interval, milliseconds."""
    liveness: int = 3
    """Missed heartbeats before an actor is purged."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9100
    """Prometheus port; 0 picks a free one, None turns it off."""
    curve: CurveConfig = field(default_factory=CurveConfig)


@dataclass(frozen=True, slots=True)
class ActorConfig:
    """Everything the shared runtime needs to run one actor."""

    kind: str
    """Actor kind, e.g. ``loopback`` or ``tts_worker``."""
    broker: str = "tcp://127.0.0.1:5550"
    """The broker's control endpoint, the one well-known address."""
    bind: str = "tcp://127.0.0.1:*"
    """The actor's inbox (ROUTER) endpoint; ``*`` picks a free port."""
    host: str = field(default_factory=socket.gethostname)
    """Host name the actor reports."""
    advertise_host: str = "127.0.0.1"
    """Address peers use for this actor's endpoints when ``bind`` is a wildcard address."""
    actor_id: str = ""
    """Unique id; empty picks ``KIND-HOST-PID-RANDOM``."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 0
    """Prometheus port; 0 picks a free one, None turns it off."""
    metrics_port_shared: bool = False
    """``metrics_port`` is the kind's port from topology.yaml, which every instance of the kind
    on a host is given: when another holds it, this one serves on a free port (and says so).
    A port given on the command line is this instance's own: taken, the actor does not start."""
    heartbeat_ms: int = 1000
    liveness: int = 3
    request_timeout_s: float = 2.0
    """Default timeout of :meth:`Actor.request`."""
    data_backlog: int = 8192
    """Data (audio) messages held while control messages are served; the oldest drop beyond."""
    curve: CurveConfig = field(default_factory=CurveConfig)
    settings: dict[str, Any] = field(default_factory=dict)
    """Actor-specific settings from topology.yaml (``actors.KIND``)."""
    restarts: int = 0
    """Times ``duplex run``'s watcher restarted this actor after a crash (it says so in
    ``$DUPLEX_RESTARTS``); goes into the registration and ``duplex_actor_restarts``."""
    replaces: str = ""
    """Actor id of the crashed process this one restarts (``$DUPLEX_REPLACES``), if any."""

    def with_id(self) -> ActorConfig:
        """This config with ``actor_id`` filled in."""
        if self.actor_id:
            return self
        suffix = new_id()[:4]
        return replace(self, actor_id=f"{self.kind}-{self.host}-{os.getpid()}-{suffix}")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One host of ``hosts:``: what ``duplex up HOST`` starts there and how."""

    name: str
    address: str = "127.0.0.1"
    """What peers dial to reach this host's actors (their ``advertise_host``)."""
    bind: str = ""
    """Address the actors' inboxes bind (empty: ``address``; ``0.0.0.0`` for every one)."""
    actors: tuple[tuple[str, int], ...] = ()
    """Kinds and how many of each, in the order given."""
    device: str = ""
    """``device`` of this host's ASR and TTS workers (empty: the topology's)."""
    actor_key: str = ""
    """Base name of this host's CURVE key pair in ``keys_dir`` (empty: ``curve.actor_key``)."""


HOST_FIELDS = frozenset({"address", "bind", "actors", "device", "actor_key"})


@dataclass(frozen=True, slots=True)
class Topology:
    """The parsed topology.yaml."""

    broker: BrokerConfig
    defaults: dict[str, Any]
    actors: dict[str, dict[str, Any]]
    hosts: dict[str, HostConfig]

    def actor_config(self, kind: str, **overrides: Any) -> ActorConfig:
        """The runtime config of ``kind``: defaults, then ``actors.KIND``, then ``overrides``
        (CLI flags; ``None`` values are ignored; ``actor_key`` names this actor's CURVE key
        pair instead of ``curve.actor_key``)."""
        actor_key = overrides.pop("actor_key", None)
        curve = replace(self.broker.curve, actor_key=actor_key) if actor_key else self.broker.curve
        section = dict(self.actors.get(kind) or {})
        known = set(ActorConfig.__dataclass_fields__) - {
            "kind",
            "settings",
            "curve",
            "restarts",
            "replaces",
            "metrics_port_shared",
        }
        merged: dict[str, Any] = {
            "broker": _connect_endpoint(self.broker.control),
            "heartbeat_ms": self.broker.heartbeat_ms,
            "liveness": self.broker.liveness,
        }
        for source in (self.defaults, section):
            merged.update({k: v for k, v in source.items() if k in known})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        merged["metrics_port_shared"] = overrides.get("metrics_port") is None and bool(
            merged.get("metrics_port")
        )
        settings = {k: v for k, v in section.items() if k not in known}
        return ActorConfig(kind=kind, curve=curve, settings=settings, **merged)


def _connect_endpoint(endpoint: str) -> str:
    """A bind endpoint turned into one to connect to (wildcards become loopback)."""
    for wildcard in ("0.0.0.0", "*", "[::]"):
        endpoint = endpoint.replace(f"//{wildcard}:", "//127.0.0.1:")
    return endpoint


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise TopologyError(f"topology: '{name}' must be a mapping")
    return value


def parse_topology(data: Any, base_dir: Path = Path(".")) -> Topology:
    """Validate the YAML document ``data``; relative key paths resolve against ``base_dir``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TopologyError("topology: the document must be a mapping")
    unknown = set(data) - {"version", "broker", "curve", "defaults", "actors", "hosts"}
    if unknown:
        raise TopologyError(f"topology: unknown sections {sorted(unknown)}")
    curve_raw = _section(data, "curve")
    try:
        curve = CurveConfig(
            enabled=bool(curve_raw.get("enabled", False)),
            keys_dir=base_dir / str(curve_raw.get("keys_dir", "keys")),
            broker_key=str(curve_raw.get("broker_key", "broker")),
            actor_key=str(curve_raw.get("actor_key", "actor")),
            allow_dir=base_dir / str(curve_raw.get("allow_dir", "keys/allowed")),
        )
        broker_raw = _section(data, "broker")
        extra = set(broker_raw) - set(BrokerConfig.__dataclass_fields__)
        if extra:
            raise TopologyError(f"topology: unknown broker settings {sorted(extra)}")
        broker = BrokerConfig(**{**broker_raw, "curve": curve})
    except TypeError as exc:
        raise TopologyError(f"topology: {exc}") from exc
    if broker.heartbeat_ms < 10 or broker.liveness < 1:
        raise TopologyError("topology: heartbeat_ms must be >= 10 and liveness >= 1")
    actors = _section(data, "actors")
    for kind, section in actors.items():
        if section is not None and not isinstance(section, dict):
            raise TopologyError(f"topology: actors.{kind} must be a mapping")
    return Topology(
        broker=broker,
        defaults=_section(data, "defaults"),
        actors={k: dict(v or {}) for k, v in actors.items()},
        hosts={name: _host(name, raw) for name, raw in _section(data, "hosts").items()},
    )


def _host(name: Any, raw: Any) -> HostConfig:
    """``hosts.NAME``: ``actors`` a list of kinds (one each) or a map of kind to count."""
    where = f"topology: hosts.{name}"
    if not isinstance(raw, dict):
        raise TopologyError(f"{where} must be a mapping")
    unknown = set(raw) - HOST_FIELDS
    if unknown:
        raise TopologyError(f"{where}: unknown settings {sorted(map(str, unknown))}")
    listed = raw.get("actors") or []
    if isinstance(listed, list):
        counts = [(kind, 1) for kind in listed]
    elif isinstance(listed, dict):
        counts = list(listed.items())
    else:
        raise TopologyError(f"{where}.actors must be a list of kinds or a map of kind to count")
    for kind, count in counts:
        if not isinstance(kind, str) or not kind:
            raise TopologyError(f"{where}.actors: {kind!r} is not an actor kind")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 64:
            raise TopologyError(f"{where}.actors.{kind}: count {count!r} is not 0..64")
    if len({kind for kind, _ in counts}) != len(counts):
        raise TopologyError(f"{where}.actors names a kind twice")
    fields = {k: str(raw[k]) for k in ("address", "bind", "device", "actor_key") if raw.get(k)}
    return HostConfig(name=str(name), actors=tuple(counts), **fields)


def load_topology(path: Path | None) -> Topology:
    """Read topology.yaml (``None`` gives the built-in defaults)."""
    if path is None:
        return parse_topology({})
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_topology(data, path.parent)
