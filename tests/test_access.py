"""Who may use the gateway's port: the access token off loopback, the browser Origin check,
HTTPS/WSS with a `duplex tls-cert` pair, and the start-up refusals. Real gateway processes and
real sockets (no broker is needed to serve the port; the bus side is not under test here)."""

from __future__ import annotations

import json
import os
import ssl
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support import ROOT, BrokerPorts, Processes, duplex, free_port, metric, wait_until

ENV_TOKEN = "env-token-0123456789abcdef"
TOPOLOGY_TOKEN = "topology-token-0123456789"
APP_ORIGIN = "https://app.example"
Answer = tuple[int, Any]


def environment(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DUPLEX_TOKEN"}
    return env if token is None else {**env, "DUPLEX_TOKEN": token}


def topology(tmp: Path, gateway: str) -> Path:
    return BrokerPorts.pick().topology(tmp, extra=f"actors:\n  gateway:\n{gateway}")


def http(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Message, Any]:
    """(status, headers, body as JSON or text) of one request; errors are answers too."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            status, got, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        status, got, body = err.code, err.headers, err.read()
    try:
        return status, got, json.loads(body)
    except ValueError:
        return status, got, body.decode(errors="replace")


def websocket(
    url: str,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """(101, the first event) of an accepted WebSocket, or (status, JSON body) of a refusal."""
    try:
        with connect(
            url, additional_headers=headers, origin=origin, ssl=context, open_timeout=5
        ) as ws:
            return 101, json.loads(ws.recv(timeout=5))
    except InvalidStatus as exc:
        return exc.response.status_code, json.loads(exc.response.body or b"null")


def start_gateway(
    procs: Processes, tmp: Path, settings: str, token: str | None, *flags: str
) -> tuple[int, Any]:
    """A gateway process on a free port; (port, process) once /health answers."""
    port = free_port()
    topo = topology(tmp, f"    http_port: {port}\n{settings}")
    proc = procs.duplex(
        "run", "gateway", "--topology", str(topo), *flags, name="gateway", env=environment(token)
    )
    scheme = "https" if flags else "http"
    unverified = ssl._create_unverified_context() if flags else None

    def up() -> bool:
        assert proc.poll() is None, procs.log_of(proc)
        try:
            return http(f"{scheme}://127.0.0.1:{port}/health", context=unverified)[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_until(up, 30, "the gateway to serve")
    return port, proc


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway bound to 0.0.0.0: the token of $DUPLEX_TOKEN (over the topology's) needed."""
    tmp = tmp_path_factory.mktemp("lan")
    procs = Processes(tmp)
    try:
        settings = (
            "    http_host: 0.0.0.0\n"
            f"    token: {TOPOLOGY_TOKEN}\n"
            f"    allowed_origins: [{APP_ORIGIN}]\n"
        )
        port, _ = start_gateway(procs, tmp, settings, ENV_TOKEN)
        yield f"127.0.0.1:{port}"
    finally:
        procs.close()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway on loopback with no token configured."""
    tmp = tmp_path_factory.mktemp("local")
    procs = Processes(tmp)
    try:
        port, _ = start_gateway(procs, tmp, "    http_host: 127.0.0.1\n", None)
        yield f"127.0.0.1:{port}"
    finally:
        procs.close()


def test_off_loopback_every_guarded_route_refuses_a_missing_or_wrong_token(lan: str) -> None:
    refusals = metric(f"http://{lan}/metrics?token={ENV_TOKEN}", "duplex_gateway_refused_total")
    wrong = [
        {},
        {"Authorization": "Bearer not-the-token-at-all"},
        {"Authorization": f"Bearer {TOPOLOGY_TOKEN}"},  # $DUPLEX_TOKEN wins over the topology
        {"Authorization": f"Basic {ENV_TOKEN}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ]
    for headers in wrong:
        for method, path in [
            ("GET", "/v1/voices"),
            ("GET", "/metrics"),
            ("POST", "/v1/synthesize"),
            ("POST", "/webrtc/offer"),  # no such route yet: the middleware answers first
            ("DELETE", "/webrtc/session/abc"),
            ("GET", "/no-such-path"),
            ("POST", "/v1/audio/speech"),
            ("GET", "/v1/models"),
        ]:
            status, got, body = http(f"http://{lan}{path}", method, headers)
            assert status == 401, (method, path, headers, body)
            assert body["error"]["code"] == "UNAUTHORIZED", body
            assert got["WWW-Authenticate"].startswith("Bearer"), got
        for path in ("/ws", "/"):  # "/": the older project's clients; the page stays open
            status, body = websocket(f"ws://{lan}{path}", headers)
            assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED"), (path, body)
    for query in ("?token=wrong-token-0123456789", f"?token={TOPOLOGY_TOKEN}"):
        assert http(f"http://{lan}/v1/voices{query}")[0] == 401
        assert websocket(f"ws://{lan}/ws{query}")[0] == 401
    after = metric(f"http://{lan}/metrics?token={ENV_TOKEN}", "duplex_gateway_refused_total")
    assert after - refusals == len(wrong) * 10 + 4


def test_off_loopback_the_token_in_a_header_or_the_query_is_accepted(lan: str) -> None:
    bearer = {"Authorization": f"Bearer {ENV_TOKEN}"}
    status, _, body = http(f"http://{lan}/v1/voices", headers=bearer)
    assert (status, body) == (200, {"voices": []})
    assert http(f"http://{lan}/v1/voices?token={ENV_TOKEN}")[0] == 200
    status, _, text = http(f"http://{lan}/metrics", headers=bearer)
    assert status == 200 and "duplex_gateway_refused_total" in text
    # Past the door, an unknown path is an ordinary 404 (no route yet: 404 or 405, never 401).
    assert http(f"http://{lan}/no-such-path", headers=bearer)[0] == 404
    assert http(f"http://{lan}/webrtc/offer", "POST", bearer)[0] not in (401, 403)
    for url, headers in [
        (f"ws://{lan}/ws", bearer),
        (f"ws://{lan}/ws?token={ENV_TOKEN}", {}),
        (f"ws://{lan}/?token={ENV_TOKEN}", {}),
    ]:
        status, first = websocket(url, headers)
        assert status == 101 and first["type"] == "session_start", first


def test_duplex_chat_without_the_token_reports_the_refusal_clearly(lan: str) -> None:
    refused = duplex("chat", "--url", f"ws://{lan}/ws", "--say", "hi", env=environment(None))
    assert refused.returncode == 1 and "UNAUTHORIZED" in refused.stderr, refused.stderr


def test_the_page_its_assets_and_the_probes_stay_open(lan: str) -> None:
    status, _, page = http(f"http://{lan}/")
    assert status == 200 and "Duplex" in page
    status, _, health = http(f"http://{lan}/health")
    assert status == 200 and health["status"] == "ok"
    assert http(f"http://{lan}/ready")[0] == 503  # open, and not ready: no workers here
    assert http(f"http://{lan}/web/app.js")[0] == 200  # the page's own assets are open
    assert http(f"http://{lan}/web/nothing.js")[0] == 404  # open: no such asset, not 401
    assert http(f"http://{lan}/health", "POST")[0] == 401  # only GET and HEAD are open


def test_browser_origins_other_than_its_own_or_the_allowed_list_are_refused(lan: str) -> None:
    token = {"Authorization": f"Bearer {ENV_TOKEN}"}
    before = metric(
        f"http://{lan}/metrics?token={ENV_TOKEN}", "duplex_gateway_refused_total", reason="origin"
    )
    for origin in [f"http://{lan}", APP_ORIGIN, f"{APP_ORIGIN}:443", None]:
        status, first = websocket(f"ws://{lan}/ws", token, origin)
        assert status == 101 and first["type"] == "session_start", (origin, first)
    bad = ["https://evil.example", f"https://{lan}", "http://127.0.0.1:1", "null", "x" * 3000]
    for origin in bad:
        status, body = websocket(f"ws://{lan}/ws", token, origin)
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN_ORIGIN"), (origin, body)
        status, _, body = http(f"http://{lan}/webrtc/offer", "POST", {**token, "Origin": origin})
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN_ORIGIN"), (origin, body)
    # A cross-site GET is not checked (CORS keeps its answer from the page).
    assert http(f"http://{lan}/v1/voices", headers={**token, "Origin": bad[0]})[0] == 200
    after = metric(
        f"http://{lan}/metrics?token={ENV_TOKEN}", "duplex_gateway_refused_total", reason="origin"
    )
    assert after - before == 2 * len(bad)


def test_on_loopback_no_token_is_asked_but_other_sites_are_still_refused(local: str) -> None:
    assert http(f"http://{local}/v1/voices")[0] == 200
    assert http(f"http://{local}/metrics")[0] == 200
    assert http(f"http://{local}/no-such-path")[0] == 404
    assert websocket(f"ws://{local}/ws")[0] == 101
    assert websocket(f"ws://{local}/ws", origin=f"http://{local}")[0] == 101
    assert websocket(f"ws://{local}/ws", origin="https://evil.example")[0] == 403
    # DNS rebinding: a page of evil.example whose name now points here is "same-origin" by
    # Host, but with no token only a loopback Host is the gateway's own.
    port = local.rpartition(":")[2]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    status, _, body = http(f"http://{local}/v1/synthesize", "POST", rebound)
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN_ORIGIN"), body
    refused = metric(f"http://{local}/metrics", "duplex_gateway_refused_total", reason="origin")
    assert refused == 2


def test_https_and_wss_with_a_duplex_tls_cert_pair_and_a_token_on_loopback(
    procs: Processes, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    made = duplex("tls-cert", "--host", "gw.lan", "--host", "192.0.2.7", "--dir", str(keys))
    assert made.returncode == 0, made.stderr
    assert "duplex run gateway --tls-cert" in made.stdout and "https://gw.lan:8080" in made.stdout
    cert, key = keys / "gateway.crt", keys / "gateway.key"
    assert stat.S_IMODE(cert.stat().st_mode) == stat.S_IMODE(key.stat().st_mode) == 0o600
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert set(sans.value.get_values_for_type(x509.DNSName)) == {"gw.lan", "localhost"}
    assert {str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)} == {
        "192.0.2.7",
        "127.0.0.1",
        "::1",
    }
    again = duplex("tls-cert", "--host", "other", "--dir", str(keys))
    assert again.returncode == 1 and "exists" in again.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    relative = [os.path.relpath(p, ROOT) for p in (cert, key)]  # from the current directory
    flags = ("--tls-cert", relative[0], "--tls-key", relative[1])
    port, proc = start_gateway(procs, tmp_path, "", ENV_TOKEN, *flags)
    trusting = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    status, _, body = http(base + "/v1/voices", context=trusting)  # a token even on loopback
    assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")
    assert http(base + f"/v1/voices?token={ENV_TOKEN}", context=trusting)[0] == 200
    status, first = websocket(f"wss://localhost:{port}/ws?token={ENV_TOKEN}", context=trusting)
    assert status == 101 and first["type"] == "session_start"
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http(base + "/health", context=ssl.create_default_context())  # untrusted otherwise
    assert f"wss://127.0.0.1:{port}/ws" in procs.log_of(proc)
    assert f"https://127.0.0.1:{port}/" in procs.log_of(proc)


def test_start_up_refuses_to_serve_open_or_with_bad_tls_files(tmp_path: Path) -> None:
    def start(settings: str, *flags: str, kind: str = "gateway", token: str | None = None) -> str:
        topo = topology(tmp_path, f"    http_port: {free_port()}\n{settings}")
        result = duplex("run", kind, "--topology", str(topo), *flags, env=environment(token))
        assert result.returncode != 0, result.stdout + result.stderr
        return result.stderr

    for host in ("0.0.0.0", "::", "192.0.2.7", "gw.lan"):
        error = start(f"    http_host: '{host}'\n")
        assert "gateway could not start" in error and "DUPLEX_TOKEN" in error, error
    assert "16..256 characters" in start("    http_host: 0.0.0.0\n", token="short")
    assert "not an origin" in start("    allowed_origins: ['*']\n")
    error = start("", "--tls-cert", str(tmp_path / "none.crt"), "--tls-key", "k", kind="router")
    assert "apply to the gateway" in error, error
    missing = str(tmp_path / "missing.crt")
    error = start("", "--tls-cert", missing, "--tls-key", missing)
    assert f"tls_cert {missing}: cannot read it" in error, error
    for name in ("a", "b"):
        made = duplex("tls-cert", "--host", name, "--dir", str(tmp_path / name))
        assert made.returncode == 0, made.stderr
    a_cert, b_key = (
        os.path.relpath(tmp_path / p, ROOT) for p in ("a/gateway.crt", "b/gateway.key")
    )
    error = start(f"    tls_cert: {a_cert}\n    tls_key: {b_key}\n")
    assert "not a matching PEM certificate" in error, error
    assert "tls_cert and tls_key go together" in start(f"    tls_cert: {a_cert}\n")
