"""``duplex keys NAME``: make a CURVE key pair for the broker or an actor host."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from bus.curve import create_keypair


@click.command()
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
