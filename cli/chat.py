"""``duplex chat``: talk to a running Duplex over its WebSocket (the client is
:mod:`transports.chat`; this module is its command line)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--url",
    default="ws://127.0.0.1:8080/ws",
    show_default=True,
    envvar="DUPLEX_URL",
    help="The gateway's WebSocket URL.",
)
@click.option(
    "--token",
    default="",
    envvar="DUPLEX_TOKEN",
    help="The gateway's access token (sent as Authorization: Bearer).",
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
    token: str,
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
    # Imported here: the WebSocket client (websockets, soxr) is only needed by this command.
    import asyncio

    from websockets.exceptions import InvalidStatus

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
                token=token,
            )
        )
    except InvalidStatus as exc:
        refusal = exc.response.body.decode(errors="replace")[:300]
        raise click.ClickException(f"{url} refused the connection: {refusal}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    sys.exit(code)
