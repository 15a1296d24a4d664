"""``duplex up HOST``: start on this machine exactly the actors that topology.yaml's ``hosts:``
section assigns to HOST, as many of each as it says, with the host's address, CURVE key pair
and device.

Each actor is a ``duplex run KIND`` (so each is a watcher that restarts its crashed actor) or
``duplex broker``, with ``--host HOST --advertise-host ADDRESS --bind tcp://BIND:*`` and, where
the host names them, ``--actor-key`` and ``--device`` (ASR and TTS workers). They run under
honcho's process manager, as ``honcho start`` runs the Procfile: one output stream with each
line prefixed by its process, Ctrl-C / SIGTERM stops them all, and one that exits stops the
rest (its watcher already restarted every crash it could). ``--dry-run`` prints the commands.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from bus.topology import HostConfig, Topology, TopologyError
from cli.options import load_topology_or_fail, log_level_option, topology_option
from cli.run import ACTORS, DEVICE_KINDS

KINDS = ("broker", *sorted(ACTORS))


def commands(
    topo: Topology, host: HostConfig, topology_path: Path | None, log_level: str
) -> list[tuple[str, list[str]]]:
    """(name, argv) of every process ``duplex up`` starts for ``host``."""
    out: list[tuple[str, list[str]]] = []
    base = [sys.executable, "-m", "cli"]
    common = ["--log-level", log_level]
    if topology_path is not None:
        common += ["--topology", str(topology_path)]
    for kind, count in host.actors:
        if kind not in KINDS:
            known = ", ".join(KINDS)
            raise TopologyError(
                f"topology: hosts.{host.name}.actors: unknown kind {kind!r} (known: {known})"
            )
        for n in range(1, count + 1):
            name = kind if count == 1 else f"{kind}.{n}"
            if kind == "broker":
                out.append((name, [*base, "broker", *common]))
                continue
            argv = [
                *base,
                "run",
                kind,
                *common,
                "--host",
                host.name,
                "--advertise-host",
                host.address,
                "--bind",
                f"tcp://{host.bind or host.address}:*",
            ]
            if host.actor_key:
                argv += ["--actor-key", host.actor_key]
            if host.device and kind in DEVICE_KINDS:
                argv += ["--device", host.device]
            out.append((name, argv))
    return out


@click.command()
@click.argument("host")
@topology_option
@log_level_option
@click.option("--dry-run", is_flag=True, help="Print the commands instead of running them.")
def up(host: str, topology_path: Path | None, log_level: str, dry_run: bool) -> None:
    """Start the actors topology.yaml's hosts: section assigns to HOST."""
    topo = load_topology_or_fail(topology_path)
    config = topo.hosts.get(host)
    if config is None:
        known = ", ".join(sorted(topo.hosts)) or "none"
        raise click.ClickException(f"no host {host!r} in the topology's hosts: (it has: {known})")
    try:
        planned = commands(topo, config, topology_path, log_level)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc
    if not planned:
        raise click.ClickException(f"hosts.{host} assigns no actors")
    if dry_run:
        for name, argv in planned:
            click.echo(f"{name}: {shlex.join(argv)}")
        return
    from honcho.manager import Manager  # type: ignore[import-untyped]

    manager = Manager()
    for name, argv in planned:
        manager.add_process(name, shlex.join(argv))
    manager.loop()
    sys.exit(manager.returncode)
