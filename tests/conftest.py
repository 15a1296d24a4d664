from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests.support import Processes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Subprocesses of ``duplex``, killed at the end of the test whatever happens."""
    p = Processes(tmp_path)
    yield p
    p.close()


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A ZeroMQ context whose sockets all close with linger 0 at the end."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
