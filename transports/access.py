"""Who may use the gateway's port: the access token, the browser ``Origin`` check, and TLS.

One aiohttp middleware runs before every route (so a path that has no route yet is guarded
too). It refuses, in this order:

1. a browser request from another site: a WebSocket upgrade or any request other than GET/HEAD
   whose ``Origin`` is neither the request's own origin (scheme, ``Host``, port) nor listed in
   ``allowed_origins`` → 403 ``FORBIDDEN_ORIGIN``. Without a token the gateway is on loopback,
   and only a loopback ``Host`` counts as its own origin (a DNS-rebinding name does not).
   Requests without ``Origin`` (``duplex chat``, curl) pass: WebSockets are not covered by CORS,
   so this check is what keeps a web page on another site from driving a local gateway;
2. when a token is configured, a request without it → 401 ``UNAUTHORIZED`` with
   ``WWW-Authenticate: Bearer``; the token comes as ``Authorization: Bearer TOKEN`` or a
   ``token`` query parameter (browsers cannot set headers on a WebSocket).

Open without a token: ``GET /`` (but not a WebSocket upgrade there: the older project's
clients), ``GET /web/...`` (the page's assets; the page reads the token from its own URL),
``/health`` and ``/ready`` (probes; they tell only counts and which kinds of actor are
missing). Everything else needs the token, ``/ws``, ``/webrtc/...``, ``/v1/...``,
``/metrics`` and unknown paths alike. Refusals count in ``duplex_gateway_refused_total``.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

TOKEN_ENV = "DUPLEX_TOKEN"
"""Environment variable holding the token; it wins over ``actors.gateway.token``."""
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 256
MAX_HEADER_CHARS = 1024
"""Longer ``Authorization`` or ``Origin`` headers are refused unread."""
OPEN_PATHS = frozenset({"/", "/health", "/ready"})
OPEN_PREFIXES = ("/web/",)
SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Origin = tuple[str, str, int]
"""(scheme, host, port), lower case, the port explicit."""


class AccessError(ValueError):
    """The gateway's access settings would serve open or cannot work (a bad token or origin,
    TLS files missing, unreadable or not a pair)."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``localhost`` or a loopback address;
    any other name, ``0.0.0.0``, ``::`` or an empty host reach beyond it)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configured_token(setting: str, environ: Mapping[str, str] = os.environ) -> str:
    """The token in force: ``$DUPLEX_TOKEN`` if set, else the ``token`` setting."""
    return environ.get(TOKEN_ENV) or setting


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as an :data:`Origin`, or None if it is not one (``null``, a
    path, user info, a scheme other than http/https)."""
    if len(text) > MAX_HEADER_CHARS:
        return None
    try:
        url = URL(text)
    except ValueError:
        return None
    if (
        url.scheme not in ("http", "https")
        or not url.host
        or url.port is None
        or url.user is not None
        or url.path not in ("", "/")
        or url.query_string
        or url.fragment
    ):
        return None
    return url.scheme, url.host.lower(), url.port


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """What the middleware enforces; build it with :meth:`for_gateway`."""

    token: str
    """Empty: no token asked (only allowed on loopback)."""
    allowed_origins: frozenset[Origin]

    @classmethod
    def for_gateway(
        cls, http_host: str, token: str, allowed_origins: tuple[str, ...]
    ) -> AccessPolicy:
        """The policy of a gateway bound to ``http_host``; refuses to serve open beyond
        loopback, and refuses a token or origin that could not work."""
        if token:
            if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
                raise AccessError(
                    f"the access token must be {MIN_TOKEN_CHARS}..{MAX_TOKEN_CHARS} characters "
                    f"(it has {len(token)}); make one with {MAKE_TOKEN}"
                )
            if not all("!" <= c <= "~" for c in token):
                raise AccessError("the access token must be printable ASCII with no spaces")
        elif not is_loopback(http_host):
            raise AccessError(
                f"http_host {http_host!r} is reachable beyond this machine, so clients need an "
                f"access token: set {TOKEN_ENV} (export {TOKEN_ENV}=$({MAKE_TOKEN})) or "
                "actors.gateway.token in topology.yaml"
            )
        origins = set()
        for text in allowed_origins:
            origin = parse_origin(text)
            if origin is None:
                raise AccessError(
                    f"allowed_origins: {text!r} is not an origin like https://host[:port]"
                )
            origins.add(origin)
        return cls(token=token, allowed_origins=frozenset(origins))

    def origin_refusal(self, request: web.Request) -> str | None:
        """Why this request's ``Origin`` is refused, or None."""
        origin_text = request.headers.get(hdrs.ORIGIN)
        if origin_text is None:
            return None
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if request.method in SAFE_METHODS and not upgrade:
            return None
        origin = parse_origin(origin_text)
        if origin is None:
            return "the Origin header is not an origin"
        if origin in self.allowed_origins or origin == _own_origin(request, self.token):
            return None
        return f"origin {origin_text[:100]!r} may not use this gateway (see allowed_origins)"

    def token_refusal(self, request: web.Request) -> str | None:
        """Why this request's token is refused, or None."""
        if not self.token or _is_open(request):
            return None
        presented = []
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        if authorization is not None:
            scheme, _, credentials = authorization[:MAX_HEADER_CHARS].partition(" ")
            if scheme.lower() == "bearer":
                presented.append(credentials.strip())
        presented += request.query.getall("token", [])
        if not presented:
            return (
                "this gateway needs its access token: send 'Authorization: Bearer TOKEN' "
                "or add ?token=TOKEN to the URL"
            )
        expected = self.token.encode()
        for candidate in presented[:2]:
            if len(candidate) <= MAX_TOKEN_CHARS and hmac.compare_digest(
                candidate.encode("utf-8", "replace"), expected
            ):
                return None
        return "the access token is not valid"


def _is_open(request: web.Request) -> bool:
    if request.method not in SAFE_METHODS:
        return False
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        return False  # a WebSocket at ``/`` (the older project's clients) is a session
    return request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES)


def _own_origin(request: web.Request, token: str) -> Origin | None:
    """The origin a page served by this gateway has, from the request's scheme and ``Host``;
    None if ``Host`` is no host, or (no token: loopback) is not a loopback one."""
    own = parse_origin(f"{request.scheme}://{request.host}")
    if own is None or (not token and not is_loopback(own[1])):
        return None
    return own


def _refusal(status: int, code: str, message: str) -> web.Response:
    headers = {hdrs.WWW_AUTHENTICATE: 'Bearer realm="duplex"'} if status == 401 else None
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def middleware(policy: AccessPolicy, registry: CollectorRegistry) -> Middleware:
    """The aiohttp middleware enforcing ``policy``; refusals count on ``registry``."""
    refused = Counter(
        "duplex_gateway_refused_total",
        "Requests the gateway refused before any route, by reason (token, origin)",
        ["reason"],
        registry=registry,
    )
    for reason in ("token", "origin"):
        refused.labels(reason=reason)  # both series exist from the start, at 0

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        message = policy.origin_refusal(request)
        if message is not None:
            refused.labels(reason="origin").inc()
            return _refusal(403, "FORBIDDEN_ORIGIN", message)
        message = policy.token_refusal(request)
        if message is not None:
            refused.labels(reason="token").inc()
            return _refusal(401, "UNAUTHORIZED", message)
        return await handler(request)

    return access


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context from PEM files; missing, unreadable or mismatched files raise
    :class:`AccessError` naming the file."""
    for setting, path in (("tls_cert", cert), ("tls_key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise AccessError(f"{setting} {path}: cannot read it: {exc.strerror}") from exc
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # An encrypted key would make OpenSSL prompt on the terminal; an empty password fails.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise AccessError(
            f"tls_cert {cert} and tls_key {key} are not a matching PEM certificate and "
            f"unencrypted private key ({exc.reason or exc})"
        ) from exc
    return context
