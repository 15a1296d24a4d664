"""``duplex say TEXT --out FILE``: speak with a real TTS worker and write the audio as a WAV.

A worker of the running stack speaks if one is registered (with the voice asked for); else a
broker and a worker start in this process (:mod:`cli.local_stack`) for this one utterance.
"""

from __future__ import annotations

from pathlib import Path

import click

from bus.audio_format import FRAME_S, write_wav
from bus.client import BrokerClient
from bus.errors import BusError
from bus.settings import SettingsError
from bus.topology import Topology
from cli.options import broker_option, load_topology_or_fail, topology_option


@click.command()
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
@broker_option
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
    # Imported here: the local stack brings the TTS worker and its engines, which the other
    # commands never need.
    from cli.local_stack import LocalTtsStack
    from transports.tts_client import TtsClient

    topo = load_topology_or_fail(topology_path)
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
    except (BusError, RuntimeError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    assert spoken.end is not None  # speak() returns only once the utterance's tts.end came
    if spoken.end.reason != "completed":
        raise click.ClickException(f"synthesis ended: {spoken.end.reason} {spoken.end.error}")
    write_wav(out, spoken.pcm)
    first = f"{spoken.first_audio_s * 1000:.0f} ms" if spoken.first_audio_s is not None else "-"
    click.echo(
        f"wrote {out}: {len(spoken.frames) * FRAME_S:.2f} s of audio, first audio after "
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
