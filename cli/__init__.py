"""The ``duplex`` command: launch the broker or any actor on any host, inspect, make keys, speak.

One module per command (``cli/broker.py``, ``cli/run.py``, ...); the options and helpers they
share are in :mod:`cli.options`. The console script is ``duplex = "cli:main"``.
"""

from __future__ import annotations

import click

from cli import broker, chat, keys, run, say, status, tls, up, voices


@click.group()
def main() -> None:
    """Duplex: realtime full-duplex voice on a ZeroMQ bus."""


main.add_command(broker.broker)
main.add_command(run.run)
main.add_command(status.status)
main.add_command(keys.keys)
main.add_command(tls.tls_cert)
main.add_command(say.say)
main.add_command(chat.chat)
main.add_command(voices.voices)
main.add_command(up.up)
