"""The ``duplex`` command: launch the broker or any actor on any host, inspect, make keys."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import shutil
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import zmq

from bus import lifecycle, logs
from bus.client import BrokerClient
from bus.curve import create_keypair
from bus.errors import BusError
from bus.runtime import Actor, serve_actor
from bus.topology import Topology, TopologyError, load_topology

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


def _topology(path: Path | None) -> Topology:
    if path is None and Path("topology.yaml").is_file():
        path = Path("topology.yaml")
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc


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


@click.group()
def main() -> None:
    """Duplex: realtime full-duplex voice on a ZeroMQ bus."""


@main.command()
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
    from actors.broker import main as run_broker

    logs.configure(log_level, as_json=log_json)
    config = _topology(topology_path).broker
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
    with _clear_errors("broker"):
        run_broker(dataclasses.replace(config, **overrides))


@main.command()
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
    log_level: str,
    log_json: bool,
) -> None:
    """Run one actor and register it with the broker."""
    logs.configure(log_level, as_json=log_json)
    config = _topology(topology_path).actor_config(
        actor,
        broker=broker_endpoint,
        bind=bind,
        host=host,
        advertise_host=advertise_host,
        actor_id=actor_id,
        metrics_port=metrics_port,
    )
    with _clear_errors(actor):
        lifecycle.run(serve_actor(_actor_class(actor)(config)))


@contextlib.contextmanager
def _clear_errors(what: str) -> Iterator[None]:
    """Start-up failures (a port in use, a missing key file) as one line, not a traceback."""
    try:
        yield
    except (OSError, zmq.ZMQError, ValueError) as exc:
        raise click.ClickException(f"{what} could not start: {exc}") from exc


def _actor_class(kind: str) -> type[Actor]:
    module_name, _, class_name = ACTORS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise click.ClickException(f"{ACTORS[kind]} is not an Actor")
    return cls


@main.command()
@topology_option
@click.option(
    "--broker", "broker_endpoint", envvar="DUPLEX_BROKER", help="Broker control endpoint."
)
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
    topo = _topology(topology_path)
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
    header = ("KIND", "ACTOR", "HOST", "PID", "LOAD", "UPTIME", "MODELS")
    table = [header] + [
        (
            r["kind"],
            r["actor_id"],
            r["host"],
            str(r["pid"]),
            f"{r['load']:.2f}",
            f"{r['uptime_s']}s",
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
                    }
                    click.echo(json.dumps(line))
                else:
                    load = f"load={reg.load:.2f}"
                    click.echo(f"{change.value:8} {reg.kind:12} {reg.actor_id}  {load}")
    except BusError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Where to write the key files.",
)
@click.option(
    "--allow",
    "allow_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also copy the public key into this allow-list folder.",
)
def keys(name: str, directory: Path, allow_dir: Path | None) -> None:
    """Create a CURVE key pair NAME.key (public) and NAME.key_secret (keep private)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise click.BadParameter("use letters, digits, '-' and '_' only", param_hint="NAME")
    secret = directory / f"{name}.key_secret"
    if secret.exists():
        raise click.ClickException(f"{secret} exists; remove it first to make a new key pair")
    public, secret = create_keypair(directory, name)
    click.echo(f"public key: {public}")
    click.echo(f"secret key: {secret} (mode 600, keep it on this host)")
    if allow_dir is not None:
        allow_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, allow_dir / public.name)
        click.echo(f"allowed:    {allow_dir / public.name}")


@main.command()
@click.argument("text")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="WAV file to write (48 kHz mono 16-bit).",
)
@click.option("--voice", default="", help="Voice id (duplex voices); default: the worker's.")
@click.option("--speed", type=click.FloatRange(0.5, 2.0), help="Speaking rate, 1.0 normal.")
@topology_option
@click.option(
    "--broker", "broker_endpoint", envvar="DUPLEX_BROKER", help="Broker control endpoint."
)
@click.option("--local", is_flag=True, help="Start a worker in this process even if a stack runs.")
def say(
    text: str,
    out: Path,
    voice: str,
    speed: float | None,
    topology_path: Path | None,
    broker_endpoint: str | None,
    local: bool,
) -> None:
    """Speak TEXT with a real TTS worker and write it to a WAV file.

    Uses a worker of the running stack if there is one, else starts one in this process."""
    from transports.local_stack import LocalTtsStack
    from transports.tts_client import TtsClient

    topo = _topology(topology_path)
    options = {"speed": speed} if speed is not None else {}
    endpoint = None if local else _find_worker(topo, broker_endpoint, voice)
    try:
        if endpoint is not None:
            with TtsClient(endpoint) as client:
                spoken = client.speak(text, voice=voice, options=options)
            where = f"worker at {endpoint}"
        else:
            click.echo(
                "say: no TTS worker running; starting one here (loading the voice)...", err=True
            )
            with (
                LocalTtsStack(topo.actor_config("tts_worker").settings) as stack,
                TtsClient(stack.worker_inbox) as client,
            ):
                spoken = client.speak(text, voice=voice, options=options)
            where = "a worker started here"
    except (BusError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    assert spoken.end is not None
    if spoken.end.reason != "completed":
        raise click.ClickException(f"synthesis ended: {spoken.end.reason} {spoken.end.error}")
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48_000)
        wav.writeframes(spoken.pcm)
    first = f"{spoken.first_audio_s * 1000:.0f} ms" if spoken.first_audio_s is not None else "-"
    click.echo(
        f"wrote {out}: {len(spoken.frames) * 0.02:.2f} s of audio, first audio after "
        f"{first}, from {where}"
    )


def _find_worker(topo: Topology, broker_endpoint: str | None, voice: str) -> str | None:
    """Inbox of the least-loaded live worker that has ``voice``, if a stack is running."""
    endpoint = broker_endpoint or topo.actor_config("say").broker
    try:
        with BrokerClient(endpoint, timeout_s=0.5, curve_config=topo.broker.curve) as client:
            workers = client.discover("tts_worker").actors
    except BusError:
        return None
    fits = [w for w in workers if not voice or voice in w.capabilities.get("voices", ())]
    if not fits:
        return None
    return min(fits, key=lambda w: w.load).endpoints.get("inbox")


@main.command()
@click.option(
    "--url",
    default="ws://127.0.0.1:8080/ws",
    show_default=True,
    envvar="DUPLEX_URL",
    help="The gateway's WebSocket URL.",
)
@click.option("--say", multiple=True, help="Speak this text, then exit (repeatable).")
@click.option(
    "--send-wav",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Stream this WAV as microphone audio in real time (a spoken conversation).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, 600),
    default=30.0,
    show_default=True,
    help="After --send-wav: seconds at most to wait for the answers.",
)
@click.option(
    "--dialogue",
    type=click.Choice(["echo", "openai"]),
    default=None,
    help="Reply adapter for this session (default: the supervisor's).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Save each bot utterance as a WAV in this folder.",
)
@click.option("--voice", default="", help="Voice id for this session.")
@click.option(
    "--audio-format",
    type=click.Choice(["binary", "json"]),
    default="binary",
    show_default=True,
    help="How the gateway sends audio.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON events.")
def chat(
    url: str,
    say: tuple[str, ...],
    send_wav: Path | None,
    wait_s: float,
    dialogue: str | None,
    out_dir: Path | None,
    voice: str,
    audio_format: str,
    as_json: bool,
) -> None:
    """Talk to a running Duplex over its WebSocket: type lines, or --say / --send-wav."""
    import asyncio

    from transports.chat import chat as run_chat

    try:
        code = asyncio.run(
            run_chat(
                url,
                say=list(say),
                send_wav=send_wav,
                out_dir=out_dir,
                as_json=as_json,
                voice=voice,
                audio_format=audio_format,
                wait_s=wait_s,
                dialogue=dialogue,
            )
        )
    except OSError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    sys.exit(code)


@main.command()
@topology_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def voices(topology_path: Path | None, as_json: bool) -> None:
    """List the voices TTS workers can speak with (voice packs) and whether their weights are
    installed."""
    from actors.tts_worker import WorkerSettings
    from adapters.tts.voicepacks import VoicePackError, discover_voicepacks

    topo = _topology(topology_path)
    try:
        settings = WorkerSettings.from_settings(topo.actor_config("tts_worker").settings)
        packs = discover_voicepacks(settings.voicepacks)
    except (VoicePackError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    rows = []
    for pack in packs.values():
        try:
            ready = all(pack.weight_path(k) for k in pack.weights if k != "package")
            problem = ""
        except VoicePackError as exc:
            ready, problem = False, str(exc)
        rows.append(
            {
                "model_id": pack.model_id,
                "family": pack.family,
                "language": pack.language,
                "sample_rate": pack.sample_rate,
                "default": pack.model_id == settings.default_voice,
                "weights": pack.weights.get("package") or str(pack.folder),
                "installed": ready,
                "problem": problem,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        state = "ready" if r["installed"] else f"NOT INSTALLED: {r['problem']}"
        click.echo(
            f"{mark} {r['model_id']:28} {r['family']:6} {r['language']:6} "
            f"{r['sample_rate']:>6} Hz  {state}"
        )


if __name__ == "__main__":
    sys.exit(main())
