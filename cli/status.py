"""``duplex status``: the live actors the broker knows, once or as a stream of changes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from bus.client import BrokerClient
from bus.errors import BusError
from bus.topology import Topology
from cli.options import broker_option, load_topology_or_fail, topology_option


@click.command()
@topology_option
@broker_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--kind", default="", help="Only actors of this kind.")
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait.")
@click.option("--watch", is_flag=True, help="Then print each registry change as it happens.")
def status(
    topology_path: Path | None,
    broker_endpoint: str | None,
    as_json: bool,
    kind: str,
    timeout: float,
    watch: bool,
) -> None:
    """List the live actors the broker knows."""
    topo = load_topology_or_fail(topology_path)
    endpoint = broker_endpoint or topo.actor_config("status").broker
    if watch:
        _watch(endpoint, timeout, topo, kind, as_json)
        return
    try:
        with BrokerClient(endpoint, timeout_s=timeout, curve_config=topo.broker.curve) as client:
            snap = client.discover(kind)
    except BusError as exc:
        raise click.ClickException(str(exc)) from exc
    now_ns = time.time_ns()
    rows: list[dict[str, Any]] = [
        {
            "actor_id": r.actor_id,
            "kind": r.kind,
            "host": r.host,
            "pid": r.pid,
            "endpoints": r.endpoints,
            "capabilities": r.capabilities,
            "resident_models": list(r.resident_models),
            "load": r.load,
            "restarts": r.restarts or 0,
            "uptime_s": round((now_ns - r.started_wall_ns) / 1e9, 1) if r.started_wall_ns else None,
        }
        for r in snap.actors
    ]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "broker": endpoint,
                    "epoch": snap.broker_epoch,
                    "version": snap.version,
                    "actors": rows,
                },
                indent=2,
            )
        )
        return
    click.echo(f"broker {endpoint}  epoch {snap.broker_epoch}  {len(rows)} actor(s)")
    header = ("KIND", "ACTOR", "HOST", "PID", "LOAD", "RESTARTS", "UPTIME", "DEVICE", "MODELS")
    table = [header] + [
        (
            r["kind"],
            r["actor_id"],
            r["host"],
            str(r["pid"]),
            f"{r['load']:.2f}",
            str(r["restarts"]),
            f"{r['uptime_s']}s",
            _device(r["capabilities"]),
            ",".join(r["resident_models"]) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _watch(endpoint: str, timeout: float, topo: Topology, kind: str, as_json: bool) -> None:
    try:
        with BrokerClient(endpoint, timeout_s=timeout, curve_config=topo.broker.curve) as client:
            for change, reg in client.watch():
                if kind and reg.kind != kind:
                    continue
                if as_json:
                    line = {
                        "change": change.value,
                        "actor_id": reg.actor_id,
                        "kind": reg.kind,
                        "host": reg.host,
                        "load": reg.load,
                        "resident_models": list(reg.resident_models),
                        "restarts": reg.restarts or 0,
                    }
                    click.echo(json.dumps(line))
                else:
                    load = f"load={reg.load:.2f}"
                    click.echo(f"{change.value:8} {reg.kind:12} {reg.actor_id}  {load}")
    except BusError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


def _device(capabilities: dict[str, Any]) -> str:
    """Where an actor's engine runs (``cuda:0 (81559 MiB)``); ``-`` for actors with none."""
    device = capabilities.get("device")
    if not isinstance(device, str):
        return "-"
    memory = capabilities.get("device_memory_mb")
    return f"{device} ({memory} MiB)" if isinstance(memory, int) else device
