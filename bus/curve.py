"""CURVE keys and the allow-list that guards the broker (zmq.auth).

Key files are ZeroMQ certificates: ``NAME.key`` holds the public key (share it),
``NAME.key_secret`` holds both (keep it). The broker admits a client only when that client's
public key file is in the allow-list folder; a refusal is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from bus.logs import kv
from bus.topology import CurveConfig

log = logging.getLogger("duplex.curve")


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair in Z85 text (40 bytes each)."""

    public: bytes
    secret: bytes


def create_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_keypair(secret_file: Path) -> KeyPair:
    """Read a ``.key_secret`` file; a clear error if it is missing or holds no secret key."""
    if not secret_file.is_file():
        raise FileNotFoundError(f"CURVE secret key file not found: {secret_file}")
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key (did you pass the .key file?)")
    return KeyPair(public=public, secret=secret)


def load_public_key(key_file: Path) -> bytes:
    """Read the public key from a ``.key`` or ``.key_secret`` file."""
    if not key_file.is_file():
        raise FileNotFoundError(f"CURVE public key file not found: {key_file}")
    public, _ = zmq.auth.load_certificate(str(key_file))
    return public


def actor_keys(config: CurveConfig) -> tuple[KeyPair, bytes]:
    """An actor's own key pair and the broker's public key, as ``config`` names them."""
    keys = load_keypair(config.keys_dir / f"{config.actor_key}.key_secret")
    return keys, load_public_key(config.keys_dir / f"{config.broker_key}.key")


def make_server(sock: zmq.Socket[Any], keys: KeyPair) -> None:
    """Make ``sock`` a CURVE server (it must be set before bind)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def make_client(sock: zmq.Socket[Any], keys: KeyPair, server_public: bytes) -> None:
    """Make ``sock`` a CURVE client of the server with ``server_public`` (set before connect)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public


class AllowList:
    """Public keys allowed in, read from every ``*.key`` file of a folder (re-read on demand)."""

    def __init__(self, directory: Path, on_refused: Callable[[str], None] | None = None) -> None:
        if not directory.is_dir():
            raise FileNotFoundError(f"CURVE allow-list folder not found: {directory}")
        self.directory = directory
        self.on_refused = on_refused
        self.keys: set[bytes] = set()
        self.reload()

    def reload(self) -> None:
        """Read the folder again (new keys take effect for new connections)."""
        self.keys = set(zmq.auth.load_certificates(str(self.directory)))

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth credentials-provider hook: True admits the client."""
        if key in self.keys:
            return True
        log.warning(
            "curve client refused",
            extra=kv(client_key=key.decode("ascii", "replace"), allow_list=str(self.directory)),
        )
        if self.on_refused is not None:
            self.on_refused(key.decode("ascii", "replace"))
        return False


def start_authenticator(
    context: zmq.Context[zmq.Socket[Any]], allow: AllowList
) -> ThreadAuthenticator:
    """Run the ZAP handler for ``context`` in a thread, admitting only ``allow``'s keys."""
    sync_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
    auth = ThreadAuthenticator(sync_ctx, log=logging.getLogger("duplex.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allow)
    return auth
