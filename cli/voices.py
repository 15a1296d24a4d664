"""``duplex voices``: the voice packs TTS workers can speak with, and whether each one's
weights are installed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bus.settings import load_settings
from cli.options import load_topology_or_fail, topology_option


@click.command()
@topology_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def voices(topology_path: Path | None, as_json: bool) -> None:
    """List the voices TTS workers can speak with (voice packs) and whether their weights are
    installed."""
    # Imported here: the worker's settings bring the TTS adapters, which other commands skip.
    from actors.tts_worker import WorkerSettings
    from adapters.tts.voicepacks import VoicePackError, discover_voicepacks

    topo = load_topology_or_fail(topology_path)
    try:
        config = topo.actor_config("tts_worker")
        settings = load_settings(WorkerSettings, config.settings, kind=config.kind)
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
