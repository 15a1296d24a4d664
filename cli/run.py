"""``duplex run KIND``: run one actor and register it with the broker.

By default the actor runs in a child process that :mod:`cli.watcher` restarts when it crashes
(so a crashed actor does not stop a honcho stack); ``--no-restart`` runs it in this process, as
the child itself does.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from adapters import devices
from bus import lifecycle, logs
from bus.runtime import Actor, serve_actor
from bus.topology import ActorConfig
from cli.options import (
    clear_errors,
    load_topology_or_fail,
    log_json_option,
    log_level_option,
    topology_option,
)
from cli.watcher import START_FAILED_STATUS, RestartPolicy, Watcher

DEFAULTS = RestartPolicy()
"""The restart policy of ``duplex run`` without restart options."""

ACTORS: dict[str, str] = {
    "asr": "actors.asr:Asr",
    "gateway": "actors.gateway:Gateway",
    "loopback": "actors.loopback:Loopback",
    "router": "actors.router:Router",
    "supervisor": "actors.supervisor:Supervisor",
    "tts_worker": "actors.tts_worker:TtsWorker",
    "vad": "actors.vad:Vad",
    "wyoming": "actors.wyoming:Wyoming",
}
"""Actor kinds ``duplex run`` knows, as ``module:Class`` (imported only when run)."""
DEVICE_KINDS = ("asr", "tts_worker")
"""Kinds whose engines run on a device (``--device``)."""


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
@click.option(
    "--actor-key",
    help="Base name of this actor's CURVE key pair in keys_dir (default: curve.actor_key).",
)
@click.option(
    "--device",
    help="ASR and TTS workers: cpu, cuda, cuda:N or auto (a GPU when the engine's runtime "
    "sees one); overrides the topology's device.",
)
@log_level_option
@log_json_option
@click.option(
    "--restart/--no-restart",
    default=True,
    show_default=True,
    help="Run the actor in a child process, restarted when it crashes; --no-restart runs it in "
    "this process (tests, debugging).",
)
@click.option(
    "--max-crashes",
    type=click.IntRange(0),
    default=DEFAULTS.max_crashes,
    show_default=True,
    help="Crashes tolerated within --crash-window; one more and duplex run exits 1.",
)
@click.option(
    "--crash-window",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULTS.crash_window_s,
    show_default=True,
    help="Seconds over which crashes are counted.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(0),
    default=DEFAULTS.backoff_s,
    show_default=True,
    help="Seconds before the first restart; doubles per crash in a row.",
)
@click.option(
    "--max-backoff",
    type=click.FloatRange(0),
    default=DEFAULTS.max_backoff_s,
    show_default=True,
    help="Longest wait before a restart, seconds.",
)
@click.option(
    "--stable-after",
    type=click.FloatRange(0),
    default=DEFAULTS.stable_s,
    show_default=True,
    help="Seconds after which a crashed actor had run stably (the backoff starts afresh).",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(0),
    default=DEFAULTS.stop_timeout_s,
    show_default=True,
    help="Seconds a stopping actor gets before it is killed.",
)
# What the watcher tells its child (in the environment): how many restarts came before it, and
# the id of the crashed process it replaces.
@click.option(
    "--restarts", type=click.IntRange(0), default=0, envvar="DUPLEX_RESTARTS", hidden=True
)
@click.option("--replaces", default="", envvar="DUPLEX_REPLACES", hidden=True)
# Set by the watcher on its child's command line: a failed start exits START_FAILED_STATUS.
@click.option("--watched", is_flag=True, hidden=True)
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
    actor_key: str | None,
    device: str | None,
    log_level: str,
    log_json: bool,
    restart: bool,
    max_crashes: int,
    crash_window: float,
    backoff: float,
    max_backoff: float,
    stable_after: float,
    stop_timeout: float,
    restarts: int,
    replaces: str,
    watched: bool,
) -> None:
    """Run one actor and register it with the broker (restarted when it crashes)."""
    logs.configure(log_level, as_json=log_json)
    config = load_topology_or_fail(topology_path).actor_config(
        actor,
        broker=broker_endpoint,
        bind=bind,
        host=host,
        advertise_host=advertise_host,
        actor_id=actor_id,
        metrics_port=metrics_port,
        actor_key=actor_key,
        restarts=restarts if not restart else None,
        replaces=replaces if not restart else None,
    )
    given: dict[str, str] = {  # settings given as flags, over the topology's
        k: str(v.absolute()) for k, v in (("tls_cert", tls_cert), ("tls_key", tls_key)) if v
    }
    if given and actor != "gateway":
        raise click.UsageError(f"--tls-cert and --tls-key apply to the gateway, not to {actor}")
    if device is not None:
        if actor not in DEVICE_KINDS:
            raise click.UsageError(f"--device applies to {' and '.join(DEVICE_KINDS)}, not {actor}")
        try:
            devices.check(device)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        given["device"] = device
    if restart:
        policy = RestartPolicy(
            max_crashes=max_crashes,
            crash_window_s=crash_window,
            backoff_s=backoff,
            max_backoff_s=max_backoff,
            stable_s=stable_after,
            stop_timeout_s=stop_timeout,
        )
        command = [sys.executable, "-m", "cli", "run", actor, *_child_options()]
        sys.exit(Watcher([*command, "--no-restart", "--watched"], config, policy).run())
    run_here(actor, dataclasses.replace(config, settings={**config.settings, **given}), watched)


def run_here(kind: str, config: ActorConfig, watched: bool) -> None:
    """Run the actor in this process until SIGTERM / SIGINT (``--no-restart``, and the child)."""
    runnable: Actor | None = None
    try:
        with clear_errors(kind):
            runnable = actor_class(kind)(config)
            lifecycle.run(serve_actor(runnable))
    except click.ClickException as exc:
        if watched and not (runnable is not None and runnable.started):
            raise StartFailed(exc.message) from exc
        raise


class StartFailed(click.ClickException):
    """The watched child's actor could not start: the same one line, with the status that tells
    the watcher not to retry."""

    exit_code = START_FAILED_STATUS


WATCHER_ONLY = {
    "restart",
    "max_crashes",
    "crash_window",
    "backoff",
    "max_backoff",
    "stable_after",
    "stop_timeout",
    "restarts",
    "replaces",
    "watched",
    "actor_id",
}
"""Options the watcher keeps to itself (it gives each child its own ``--id``)."""


def _child_options() -> list[str]:
    """The options given on this command line, for the child's (the environment it inherits)."""
    ctx = click.get_current_context()
    args: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None or name in WATCHER_ONLY:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if param.is_flag:
            args += [param.opts[0]] if value else []
        else:
            args += [param.opts[0], str(value)]
    return args


def actor_class(kind: str) -> type[Actor]:
    """The class ``ACTORS[kind]`` names, imported now (each kind brings its own engines)."""
    module_name, _, class_name = ACTORS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise click.ClickException(f"{ACTORS[kind]} is not an Actor")
    return cls
