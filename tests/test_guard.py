"""Slow and hostile clients cost the gateway's port nothing: a request trickled header by header
or a TLS handshake never begun is closed at the handshake timeout, a WebSocket that says nothing
is ended, and the connection caps answer 429 / 503. A real gateway in this process on real
sockets, with short limits, on uvloop (as ``duplex run`` has it) and on asyncio's own loop; no
broker is needed to serve the port (a WebSocket gets ``NO_WORKER`` after ``session_start``),
except for the test that has the bot speak."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
import websockets
from websockets.exceptions import InvalidStatus

from actors.gateway import Gateway, GatewaySettings
from actors.router import Router
from actors.tts_worker import TtsWorker
from bus.broker import Broker
from bus.settings import SettingsError, load_settings
from cli.tls import tls_cert
from tests.test_client_session import Client, Supervisor
from tests.test_runtime import all_up, configs, running, until
from transports.guard import FILE_HEADROOM, raise_file_limit

pytestmark = pytest.mark.timeout(60)

GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(params=["uvloop", "asyncio"])
def loop(request: pytest.FixtureRequest) -> str:
    """The event loop a gateway runs on: uvloop as ``duplex run`` has it, and asyncio's own."""
    return str(request.param)


def serve(loop: str, body: Callable[[Gateway], Awaitable[None]], **settings: Any) -> None:
    """Run ``body`` against a gateway on a free port (``http_port`` 0) with ``settings``, on
    the event loop named ``loop``."""
    _, actor = configs()
    gateway = Gateway(actor("gateway", settings={"http_port": 0, **settings}))

    async def main() -> None:
        async with running(gateway):
            await until(lambda: "ws" in gateway.endpoints, 10, "the gateway to serve")
            await body(gateway)

    runner = uvloop.run if loop == "uvloop" else asyncio.run
    runner(asyncio.wait_for(main(), 45))


def counted(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.metrics.registry.get_sample_value(name, labels) or 0.0


async def until_closed(
    reader: asyncio.StreamReader, since: float | None = None, limit: float = 5.0
) -> tuple[float, bytes]:
    """(seconds from ``since``, or now, until the server closed the connection; everything it
    sent)."""
    started, got = time.monotonic() if since is None else since, b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), limit):
            got += chunk
    return time.monotonic() - started, got


async def trickle(writer: asyncio.StreamWriter, interval: float = 0.2) -> None:
    """A slowloris: one header line every ``interval`` seconds, never the blank line."""
    with contextlib.suppress(ConnectionError):
        for n in range(100):
            writer.write(f"X-Slow-{n}: {n}\r\n".encode())
            await writer.drain()
            await asyncio.sleep(interval)


async def session_events(url: str, *messages: str, every: float = 0.0) -> tuple[float, list[Any]]:
    """Connect to ``/ws``, send ``messages`` ``every`` seconds apart, then read until the server
    closes; (seconds from the last message sent, or the connection, to the close, events)."""
    got: list[Any] = []
    async with websockets.connect(url, open_timeout=5) as ws:
        got.append(json.loads(await ws.recv()))
        for message in messages:
            await asyncio.sleep(every)
            await ws.send(message)
        quiet_from = time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                got.append(json.loads(message))
        return time.monotonic() - quiet_from, got


def test_a_request_trickled_header_by_header_is_closed_at_the_handshake_timeout(loop: str) -> None:
    async def body(gateway: Gateway) -> None:
        port = gateway.http_port
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        silent_reader, _silent = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        trickling = asyncio.create_task(trickle(slow))
        (slow_s, slow_got), (silent_s, silent_got) = await asyncio.gather(
            until_closed(slow_reader), until_closed(silent_reader)
        )
        trickling.cancel()
        assert 0.9 < slow_s < 2.0 and slow_got == b"", (slow_s, slow_got)
        assert 0.9 < silent_s < 2.0 and silent_got == b"", (silent_s, silent_got)
        assert counted(gateway, "duplex_gateway_timeouts_total", kind="handshake") == 2

        # A prompt request is answered; on the kept-alive connection, the next request has as
        # long after the response (aiohttp's keepalive_timeout), trickled or not.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET_HEALTH)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        await asyncio.sleep(0.7)  # past most of the first deadline: the request came in time
        writer.write(b"GET /health HTTP/1.1\r\n")
        trickling = asyncio.create_task(trickle(writer))
        kept_s, _ = await until_closed(reader)
        trickling.cancel()
        assert 0.1 < kept_s < 1.5, kept_s  # about 1 s after the response
        assert counted(gateway, "duplex_gateway_connections") == 0

    serve(loop, body, handshake_timeout_s=1.0)


def test_over_tls_the_tls_handshake_counts_toward_the_handshake_timeout(
    loop: str, tmp_path: Path
) -> None:
    assert tls_cert.callback is not None
    tls_cert.callback(("localhost",), tmp_path, 1)
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    client = ssl.create_default_context(cafile=str(cert))

    async def body(gateway: Gateway) -> None:
        port = gateway.http_port
        assert gateway.endpoints["ws"].startswith("wss://")
        no_hello, _writer = await asyncio.open_connection("127.0.0.1", port)  # plain TCP
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.6)  # a slow TLS handshake, then a slow request
        await writer.start_tls(client, server_hostname="localhost")
        writer.write(b"GET /health HTTP/1.1\r\n")
        trickling = asyncio.create_task(trickle(writer))
        (no_hello_s, got), (slow_s, slow_got) = await asyncio.gather(
            until_closed(no_hello, started), until_closed(reader, started)
        )
        trickling.cancel()
        assert 0.9 < no_hello_s < 2.0 and got == b"", (no_hello_s, got)
        assert 0.9 < slow_s < 1.5 and slow_got == b"", slow_s  # from accept, not from TLS done
        assert counted(gateway, "duplex_gateway_timeouts_total", kind="handshake") == 1
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
        writer.write(GET_HEALTH)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        writer.close()

    serve(loop, body, handshake_timeout_s=1.0, tls_cert=str(cert), tls_key=str(key))


def test_a_websocket_that_sends_nothing_gets_timeout_and_session_end(loop: str) -> None:
    async def body(gateway: Gateway) -> None:
        quiet_s, got = await session_events(gateway.endpoints["ws"])
        assert 0.9 < quiet_s < 2.0, quiet_s
        kinds = [(e["type"], e.get("code") or e.get("reason")) for e in got]
        assert kinds[0] == ("session_start", None) and ("error", "NO_WORKER") in kinds, kinds
        assert kinds[-2:] == [("error", "TIMEOUT"), ("session_end", "first_message_timeout")]
        assert got[-2]["message"] == "no message within 1 s of connecting"
        assert counted(gateway, "duplex_gateway_timeouts_total", kind="first_message") == 1
        assert counted(gateway, "duplex_gateway_timeouts_total", kind="idle") == 0

    # The upgrade came at once: the handshake deadline (shorter) no longer applies.
    serve(loop, body, handshake_timeout_s=0.5, first_message_timeout_s=1.0)


def test_a_websocket_that_keeps_talking_stays_and_one_gone_quiet_gets_idle_timeout(
    loop: str,
) -> None:
    async def body(gateway: Gateway) -> None:
        talk = [json.dumps({"type": "session_config"})] * 10  # 3 s, twice the first limit
        quiet_s, got = await session_events(gateway.endpoints["ws"], *talk, every=0.3)
        assert 0.9 < quiet_s < 2.0, quiet_s
        timeouts = [e for e in got if e.get("code") == "TIMEOUT"]
        assert [e["message"] for e in timeouts] == ["no message for 1 s"], got
        assert got[-1] == {**got[-1], "type": "session_end", "reason": "idle_timeout"}
        assert counted(gateway, "duplex_gateway_timeouts_total", kind="idle") == 1
        assert counted(gateway, "duplex_gateway_timeouts_total", kind="first_message") == 0

    serve(loop, body, handshake_timeout_s=0.5, first_message_timeout_s=1.5, idle_timeout_s=1.0)


def test_the_idle_clock_stops_while_the_bot_speaks_or_is_paused() -> None:
    """Frames played and a pause longer than the idle timeout: the session lasts, and ends the
    timeout after the last frame."""
    broker_cfg, actor = configs()
    gateway = Gateway(actor("gateway", settings={"http_port": 0, "idle_timeout_s": 1.0}))
    router = Router(actor("router"))
    worker = TtsWorker(actor("tts_worker", settings={"default_voice": "mock-440hz"}))
    supervisor = Supervisor(actor("supervisor"))

    async def main() -> None:
        async with running(Broker(broker_cfg), worker, router, supervisor, gateway):
            await all_up(gateway, router, worker, supervisor)
            async with websockets.connect(gateway.endpoints["ws"]) as ws:
                client = Client(ws)
                await until(lambda: client.events("session_start"), 5, "session_start")
                text = "Twenty-five letters long."  # 1.5 s of mock voice
                await ws.send(json.dumps({"type": "text", "text": text}))
                await until(lambda: client.frames() >= 10, 10, "audio")
                await ws.send(json.dumps({"type": "control", "command": "PAUSE"}))
                await asyncio.sleep(2.0)  # paused: nothing plays, yet the utterance goes on
                assert not client.events("session_end"), client.events("error")
                await ws.send(json.dumps({"type": "control", "command": "RESUME"}))
                await until(lambda: client.events("tts_end"), 20, "tts_end")
                await until(lambda: client.events("session_end"), 5, "session_end")
                client.task.cancel()
        frames = [at for at, m in client.got if isinstance(m, bytes)]
        (ended_at,) = [
            at for at, m in client.got if isinstance(m, dict) and m["type"] == "session_end"
        ]
        assert frames[-1] - frames[0] > 3.0  # played, paused and played again
        assert client.events("tts_end")[0]["reason"] == "completed"
        assert client.events("session_end")[0]["reason"] == "idle_timeout"
        assert 0.9 < ended_at - frames[-1] < 2.0, ended_at - frames[-1]
        assert client.events("error")[-1]["code"] == "TIMEOUT"

    asyncio.run(asyncio.wait_for(main(), 50))


async def refusal(port: int, source: str = "127.0.0.1") -> tuple[int, str, dict[str, Any]]:
    """(status, Retry-After, JSON body) of a connection the gateway refuses unread."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(GET_HEALTH)
    _, answer = await until_closed(reader)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["Retry-After"], json.loads(body)


def test_over_a_connection_cap_the_next_one_gets_429_or_503_until_one_is_freed(loop: str) -> None:
    async def body(gateway: Gateway) -> None:
        port, url = gateway.http_port, gateway.endpoints["ws"]
        opened = []
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"):
            opened.append(await asyncio.open_connection(port=port, local_addr=(source, 0)))
        async with websockets.connect(url) as third:  # the third from 127.0.0.1
            await until(lambda: counted(gateway, "duplex_gateway_connections") == 5, 5, "5 open")
            silent_reader, _silent = await asyncio.open_connection("127.0.0.1", port)
            silent = asyncio.create_task(until_closed(silent_reader))  # refused, never asks
            status, retry, answer = await refusal(port)
            assert (status, retry, answer["error"]["code"]) == (429, "5", "TOO_MANY_CONNECTIONS")
            assert "maximum of 3 connections" in answer["error"]["message"], answer
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(url, open_timeout=5)
            assert refused.value.response.status_code == 429
            assert b"TOO_MANY_CONNECTIONS" in refused.value.response.body
            # One more from another address fills the gateway: anyone gets 503 now.
            opened.append(await asyncio.open_connection(port=port, local_addr=("127.0.0.3", 0)))
            await until(lambda: counted(gateway, "duplex_gateway_connections") == 6, 5, "6 open")
            status, retry, answer = await refusal(port, "127.0.0.4")
            assert (status, retry, answer["error"]["code"]) == (503, "5", "GATEWAY_FULL"), answer
            assert "maximum of 6 connections" in answer["error"]["message"], answer
            assert (await refusal(port))[0] == 503  # the gateway's cap is checked first
            await third.send(json.dumps({"type": "session_config"}))  # admitted ones work
        for _, writer in opened[:2]:  # frees the gateway and 127.0.0.1
            writer.close()
        await until(lambda: counted(gateway, "duplex_gateway_connections") == 3, 5, "3 open")
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "session_start"
        silent_s, silent_got = await silent
        assert 1.9 < silent_s < 3.0 and silent_got == b"", (silent_s, silent_got)
        refused_total = "duplex_gateway_connections_refused_total"
        assert counted(gateway, refused_total, reason="max_connections_per_address") == 3
        assert counted(gateway, refused_total, reason="max_connections") == 2

    serve(loop, body, max_connections=6, max_connections_per_address=3)


def test_limits_out_of_range_fail_at_start() -> None:
    for bad in (
        {"handshake_timeout_s": 0},
        {"first_message_timeout_s": -1},
        {"idle_timeout_s": 0},
        {"max_connections": 0},
        {"max_connections_per_address": -1},
    ):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            load_settings(GatewaySettings, bad, kind="gateway")
    unlimited = load_settings(GatewaySettings, {"max_connections_per_address": 0}, kind="gateway")
    assert unlimited.connection_limits.max_connections_per_address == 0


def test_the_open_file_limit_is_raised_to_fit_max_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000 + FILE_HEADROOM:
        pytest.skip(f"the hard open-file limit ({hard}) is too low to raise the soft one")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1100, hard))
        assert raise_file_limit(2000) == (2000 + FILE_HEADROOM, 2000 + FILE_HEADROOM)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (2000 + FILE_HEADROOM, hard)
        assert raise_file_limit(500)[0] == 2000 + FILE_HEADROOM  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
