"""What several ``duplex`` commands share: the topology, logging and broker options, and the
helpers that turn start-up failures into one clear line instead of a traceback.

It lives apart from ``cli/__init__.py`` (the group) so that each command module can import it
while the group imports the command modules, with no import cycle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click
import zmq

from bus.topology import Topology, TopologyError, load_topology


def load_topology_or_fail(path: Path | None) -> Topology:
    """``path`` (or ./topology.yaml if present, else the built-in defaults) as a Topology; a
    missing or malformed file is a ClickException (exit status 1, one line)."""
    if path is None and Path("topology.yaml").is_file():
        path = Path("topology.yaml")
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def clear_errors(what: str) -> Iterator[None]:
    """Start-up failures (a port in use, a missing key file, a bad setting) as one line, not a
    traceback. A bad setting is a SettingsError, which is a ValueError."""
    try:
        yield
    except (OSError, zmq.ZMQError, ValueError) as exc:
        raise click.ClickException(f"{what} could not start: {exc}") from exc


topology_option = click.option(
    "--topology",
    "topology_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DUPLEX_TOPOLOGY",
    help="topology.yaml to read (default: ./topology.yaml if present).",
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    envvar="DUPLEX_LOG_LEVEL",
    show_default=True,
)
log_json_option = click.option("--log-json", is_flag=True, help="Log lines as JSON objects.")
broker_option = click.option(
    "--broker", "broker_endpoint", envvar="DUPLEX_BROKER", help="Broker control endpoint."
)
"""``--broker`` for the commands that only ask the broker (``run`` has its own, longer help)."""
