"""Clients that stop reading cost nothing to others (issue: no client is ever left hanging). In
one process: a real broker, gateway, router and a mock-voice TTS worker with two stream slots on
real sockets, a supervisor stand-in that speaks every text, and real WebSocket clients; the
stalled ones have a small receive buffer (as a slow network gives) and never read."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time

import pytest
import websockets

from actors.gateway import Gateway
from actors.router import Router
from actors.tts_worker import TtsWorker
from bus.broker import Broker
from tests.support import free_port
from tests.test_client_session import LONG, Client, Supervisor
from tests.test_runtime import all_up, configs, running, until

pytestmark = pytest.mark.timeout(90)


def stalled_client(port: int, text: str) -> socket.socket:
    """A WebSocket client (by hand: no library reads for it behind its back) with a 16 KiB
    receive buffer, as a slow network gives, that sends one text and never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "text", "text": text}).encode()
    mask = os.urandom(4)
    assert len(payload) < 65536
    frame = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload)) + mask
    sock.sendall(frame + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


def test_clients_that_stop_reading_are_paused_stopped_and_cut_and_others_are_served() -> None:
    broker_cfg, actor = configs()
    http_port = free_port()
    settings = {
        "http_port": http_port,
        "max_client_backlog_ms": 500,
        "stalled_stop_ms": 1500,
        "stalled_close_ms": 4000,
        "busy_wait_ms": 1000,
    }
    gateway = Gateway(actor("gateway", settings=settings))
    router = Router(actor("router"))
    worker = TtsWorker(
        actor("tts_worker", settings={"default_voice": "mock-440hz", "max_streams": 2})
    )
    supervisor = Supervisor(actor("supervisor"))
    url = f"ws://127.0.0.1:{http_port}/ws"

    async def main() -> None:
        async with running(Broker(broker_cfg), worker, router, supervisor, gateway):
            await all_up(gateway, router, worker, supervisor)
            stalled = [  # more than the worker's slots
                await asyncio.to_thread(stalled_client, http_port, LONG * 3) for _ in range(3)
            ]
            await until(lambda: len(gateway.hub.sessions) == 3, 5, "three sessions")
            await until(lambda: len(worker.utterances) == 2, 10, "the worker full")
            started = time.monotonic()
            # Each stalled session is paused, then stopped: the worker's slots come free.
            await until(lambda: not worker.utterances, 10, "slots freed")
            freed_after = time.monotonic() - started
            async with websockets.connect(url) as ws:
                healthy = Client(ws)
                await ws.send(json.dumps({"type": "text", "text": "A healthy client."}))
                await until(lambda: healthy.events("tts_end"), 15, "the healthy client heard")
                assert healthy.events("tts_end")[0]["reason"] == "completed"
                assert not healthy.events("error")  # no BUSY
                # The two that stalled on audio are cut off. The third got BUSY (both slots
                # were held then) and no audio: it has nothing to stall on and stays.
                await until(lambda: len(gateway.hub.sessions) == 2, 10, "stalled ones cut")
                assert gateway.hub.stalled._value.get() == 2
                healthy.task.cancel()
            assert freed_after < 1.5 + 2.0  # stop_after plus the backlog to build and a check
            for sock in stalled:
                sock.close()

    asyncio.run(asyncio.wait_for(main(), 80))
