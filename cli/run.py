"""``duplex run KIND``: run one actor in this process and register it with the broker."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import click

from bus import lifecycle, logs
from bus.runtime import Actor, serve_actor
from cli.options import (
    clear_errors,
    load_topology_or_fail,
    log_json_option,
    log_level_option,
    topology_option,
)

ACTORS: dict[str, str] = {
    "asr": "actors.asr:Asr",
    "gateway": "actors.gateway:Gateway",
    "loopback": "actors.loopback:Loopback",
    "router": "actors.router:Router",
    "supervisor": "actors.supervisor:Supervisor",
    "tts_worker": "actors.tts_worker:TtsWorker",
    "vad": "actors.vad:Vad",
}
"""Actor kinds ``duplex run`` knows, as ``module:Class`` (imported only when run)."""


@click.command()
@click.argument("actor", type=click.Choice(sorted(ACTORS)))
@topology_option
@click.option(
    "--broker",
    "broker_endpoint",
    envvar="DUPLEX_BROKER",
    help="Broker control endpoint, e.g. tcp://10.0.0.1:5550.",
)
@click.option("--bind", help="Inbox endpoint to bind, e.g. tcp://0.0.0.0:* (default loopback).")
@click.option("--host", help="Host name this actor reports.")
@click.option("--advertise-host", help="Address peers reach this host at (for wildcard binds).")
@click.option("--id", "actor_id", help="Actor id (default KIND-HOST-PID-RANDOM).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Gateway only: PEM certificate; serve HTTPS and WSS (see duplex tls-cert).",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Gateway only: its key."
)
@log_level_option
@log_json_option
def run(
    actor: str,
    topology_path: Path | None,
    broker_endpoint: str | None,
    bind: str | None,
    host: str | None,
    advertise_host: str | None,
    actor_id: str | None,
    metrics_port: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
    log_json: bool,
) -> None:
    """Run one actor and register it with the broker."""
    logs.configure(log_level, as_json=log_json)
    config = load_topology_or_fail(topology_path).actor_config(
        actor,
        broker=broker_endpoint,
        bind=bind,
        host=host,
        advertise_host=advertise_host,
        actor_id=actor_id,
        metrics_port=metrics_port,
    )
    tls = {k: str(v.absolute()) for k, v in (("tls_cert", tls_cert), ("tls_key", tls_key)) if v}
    if tls and actor != "gateway":
        raise click.UsageError(f"--tls-cert and --tls-key apply to the gateway, not to {actor}")
    config = dataclasses.replace(config, settings={**config.settings, **tls})
    with clear_errors(actor):
        lifecycle.run(serve_actor(actor_class(actor)(config)))


def actor_class(kind: str) -> type[Actor]:
    """The class ``ACTORS[kind]`` names, imported now (each kind brings its own engines)."""
    module_name, _, class_name = ACTORS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise click.ClickException(f"{ACTORS[kind]} is not an Actor")
    return cls
