"""``duplex broker``: run the broker (registry, heartbeats, discovery, the event proxy) in this
process until SIGTERM / SIGINT."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from bus import lifecycle, logs
from bus.broker import Broker, serve_broker
from cli.options import (
    clear_errors,
    load_topology_or_fail,
    log_json_option,
    log_level_option,
    topology_option,
)


@click.command()
@topology_option
@click.option("--control", help="ROUTER endpoint to bind, e.g. tcp://0.0.0.0:5550.")
@click.option("--events-in", help="XSUB endpoint to bind.")
@click.option("--events-out", help="XPUB endpoint to bind.")
@click.option("--heartbeat-ms", type=click.IntRange(10, 60_000))
@click.option("--liveness", type=click.IntRange(1, 100))
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--no-metrics", is_flag=True, help="Serve no Prometheus endpoint.")
@log_level_option
@log_json_option
def broker(
    topology_path: Path | None,
    control: str | None,
    events_in: str | None,
    events_out: str | None,
    heartbeat_ms: int | None,
    liveness: int | None,
    metrics_port: int | None,
    no_metrics: bool,
    log_level: str,
    log_json: bool,
) -> None:
    """Run the broker: registry, heartbeats, discovery and the event proxy."""
    logs.configure(log_level, as_json=log_json)
    config = load_topology_or_fail(topology_path).broker
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "control": control,
            "events_in": events_in,
            "events_out": events_out,
            "heartbeat_ms": heartbeat_ms,
            "liveness": liveness,
            "metrics_port": metrics_port,
        }.items()
        if v is not None
    }
    if no_metrics:
        overrides["metrics_port"] = None
    with clear_errors("broker"):
        lifecycle.run(serve_broker(Broker(dataclasses.replace(config, **overrides))))
