"""Per-actor Prometheus metrics: one registry per actor (no global state), served over HTTP."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class BusMetrics:
    """The counters every actor (and the broker) keeps, in a registry of its own."""

    def __init__(self, kind: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"kind": kind}
        self.received = Counter(
            "duplex_messages_received_total",
            "Messages received, by type",
            ["type"],
            registry=self.registry,
        )
        self.sent = Counter(
            "duplex_messages_sent_total", "Messages sent, by type", ["type"], registry=self.registry
        )
        self.invalid = Counter(
            "duplex_messages_invalid_total",
            "Messages that failed to decode or validate, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.handler_errors = Counter(
            "duplex_handler_errors_total",
            "Handlers that raised, by message type",
            ["type"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "duplex_messages_dropped_total",
            "Data messages dropped because a queue was full",
            ["type"],
            registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "duplex_handle_seconds",
            "Time spent in message handlers",
            registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
        )
        self.up = Gauge("duplex_up", "1 while the actor runs", list(labels), registry=self.registry)
        self.up.labels(**labels).set(1)
        self._children: dict[tuple[int, str], Counter] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def count(self, counter: Counter, label: str) -> None:
        """Increment ``counter{label}``. Label lookups take a lock, so on the audio path each
        child is looked up once and kept."""
        key = (id(counter), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(label)
        child.inc()

    def serve(self, host: str, port: int) -> int:
        """Start the ``/metrics`` HTTP server; returns the bound port (``port=0`` picks one)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP server, if running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ActorMetrics(BusMetrics):
    """Bus counters plus what only an actor (not the broker) reports."""

    def __init__(self, kind: str, restarts: int = 0) -> None:
        super().__init__(kind)
        self.restarts = Gauge(
            "duplex_actor_restarts",
            "Times duplex run restarted this actor after a crash before this process",
            ["kind"],
            registry=self.registry,
        )
        self.restarts.labels(kind).set(restarts)
