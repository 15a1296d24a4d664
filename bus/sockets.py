"""Socket helpers: safe defaults (linger 0, size limits), binding to a free port, endpoints."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import zmq

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""ZeroMQ drops peers that send a single frame larger than this (a hard guard beneath the
envelope's own, smaller limits, which are counted and logged)."""

HIGH_WATER_MARK = 10_000
"""Messages queued per peer before sends block (ROUTER: drop)."""


S = TypeVar("S", bound=zmq.Socket[Any])


def prepare(sock: S, *, hwm: int = HIGH_WATER_MARK) -> S:
    """Apply the bus defaults to a fresh socket: no linger, bounded frames and queues."""
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.sndhwm = hwm
    sock.rcvhwm = hwm
    if sock.type == zmq.ROUTER:
        # A send to a peer that has gone fails (EHOSTUNREACH) instead of vanishing, so a
        # stream to a consumer that left can stop; senders treat it like a full queue.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


def bind(sock: zmq.Socket[Any], endpoint: str) -> str:
    """Bind ``endpoint`` (``tcp://HOST:0`` or ``tcp://HOST:*`` picks a free port); returns the
    endpoint actually bound."""
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        endpoint = endpoint[:-2] + ":*"
    sock.bind(endpoint)
    bound = sock.last_endpoint
    return bound.decode() if isinstance(bound, bytes) else str(bound)


WILDCARD_HOSTS = {"*", "0.0.0.0", "::", "[::]", ""}


def advertised(endpoint: str, host: str) -> str:
    """``endpoint`` with a wildcard bind address replaced by ``host``, for others to connect to."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    parts = urlsplit(endpoint)
    if parts.hostname is not None and parts.hostname not in WILDCARD_HOSTS:
        return endpoint
    return f"tcp://{host}:{parts.port}"


def host_of(endpoint: str) -> str:
    """The host part of a ``tcp://HOST:PORT`` endpoint (``127.0.0.1`` for other transports)."""
    if endpoint.startswith("tcp://"):
        return urlsplit(endpoint).hostname or "127.0.0.1"
    return "127.0.0.1"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now, below the kernel's ephemeral range: actors
    that bind port 0 (inboxes, metrics) draw from that range, and a port picked there could be
    handed to one of them before its owner binds it."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
