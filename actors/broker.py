"""The broker actor: runs :class:`bus.broker.Broker` (registry, heartbeats, discovery, event proxy).

Consumes and emits what :mod:`bus.broker` documents; this module only launches it.
"""

from __future__ import annotations

from bus import lifecycle
from bus.broker import Broker, serve_broker
from bus.topology import BrokerConfig


def main(config: BrokerConfig) -> None:
    """Run the broker in this process until SIGTERM / SIGINT."""
    lifecycle.run(serve_broker(Broker(config)))
