"""``duplex tls-cert --host NAME_OR_IP``: a self-signed certificate for the gateway on a LAN.

Browsers give a page the microphone only on localhost or over HTTPS; this pair lets a phone
on the same network reach ``https://HOST:8080`` once the user accepts the certificate.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALWAYS = ("localhost", "127.0.0.1", "::1")
"""Names every certificate also carries, so the gateway's own machine can use it."""
DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")


def subject_alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    """IP SANs for addresses, DNS SANs for names, ``ALWAYS`` added, duplicates dropped."""
    names: list[x509.GeneralName] = []
    for host in (*hosts, *ALWAYS):
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            if not DNS_NAME.match(host.lower()):
                raise click.BadParameter(
                    f"{host!r} is neither an IP address nor a host name", param_hint="--host"
                ) from None
            name = x509.DNSName(host.lower())
        if name not in names:
            names.append(name)
    return names


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that must not exist yet, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@click.command("tls-cert")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A name or IP address clients use for the gateway (repeat for several).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Where to write gateway.crt and gateway.key.",
)
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True)
def tls_cert(hosts: tuple[str, ...], directory: Path, days: int) -> None:
    """Make a self-signed certificate gateway.crt and its key gateway.key (both mode 600)."""
    names = subject_alt_names(hosts)
    cert_path, key_path = directory / "gateway.crt", directory / "gateway.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise click.ClickException(f"{path} exists; remove it first to make a new pair")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # a phone's clock a little behind
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(key_path, key_pem)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    shown = ", ".join(str(n.value) for n in names)
    host = next((h for h in hosts if h not in ALWAYS), hosts[0])
    host = f"[{host}]" if ":" in host else host
    click.echo(f"certificate: {cert_path} (valid {days} days for {shown})")
    click.echo(f"private key: {key_path} (mode 600, keep it on this host)")
    click.echo("next steps:")
    click.echo(
        "  export DUPLEX_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    )
    click.echo(f"  duplex run gateway --tls-cert {cert_path} --tls-key {key_path}")
    click.echo("    (with actors.gateway.http_host: 0.0.0.0 in topology.yaml to serve the LAN)")
    click.echo(
        f"  open https://{host}:8080/?token=$DUPLEX_TOKEN on the phone and accept the certificate"
    )
