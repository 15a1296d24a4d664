"""A broker and a TTS worker inside this process, for ``duplex say`` when no stack is running."""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType

from actors.tts_worker import TtsWorker
from bus.broker import Broker
from bus.sockets import free_port
from bus.topology import ActorConfig, BrokerConfig


def _free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class LocalTtsStack:
    """``with LocalTtsStack(settings) as stack: stack.worker_inbox`` — up until the block ends."""

    def __init__(
        self, settings: dict[str, object] | None = None, start_timeout_s: float = 120
    ) -> None:
        control = _free_endpoint()
        self.broker = Broker(
            BrokerConfig(
                control=control,
                events_in="tcp://127.0.0.1:0",
                events_out="tcp://127.0.0.1:0",
                metrics_port=None,
            )
        )
        self.worker = TtsWorker(
            ActorConfig(
                kind="tts_worker", broker=control, metrics_port=None, settings=dict(settings or {})
            )
        )
        self.start_timeout_s = start_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="local-tts-stack", daemon=True)
        self._error: BaseException | None = None

    @property
    def worker_inbox(self) -> str:
        return self.worker.endpoints["inbox"]

    def _main(self) -> None:
        async def both() -> None:
            await asyncio.gather(self.broker.run(), self.worker.run())

        try:
            self._loop.run_until_complete(both())
        except BaseException as exc:  # surfaced to the caller by __enter__
            self._error = exc

    def __enter__(self) -> LocalTtsStack:
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.worker.registered.is_set():
            if self._error is not None or not self._thread.is_alive():
                self._stop()
                raise RuntimeError(f"the local TTS worker failed to start: {self._error}")
            if time.monotonic() > deadline:
                self._stop()
                raise RuntimeError("the local TTS worker did not start in time")
            time.sleep(0.02)
        return self

    def _stop(self) -> None:
        for runnable in (self.worker, self.broker):
            self._loop.call_soon_threadsafe(runnable.stop)
        self._thread.join(timeout=10)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
