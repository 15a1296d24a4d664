"""The loopback actor: a diagnostic echo for measuring and checking the bus.

Consumes ``audio.frame`` (and any message) published on topic ``loopback.in`` and sent to its
inbox. Emits each one back unchanged in body and payload: event-bus messages are republished on
``loopback.out``, inbox messages are answered to their sender. ``duplex run loopback`` on two
hosts shows what a hop costs between them; ``scripts/bench_bus`` uses it. It has no settings
(:class:`LoopbackSettings`): any key under ``actors.loopback`` but the runtime's is a typo.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.runtime import Actor, Inbound, Via
from bus.settings import load_settings
from bus.topology import ActorConfig

TOPIC_IN = b"loopback.in"
TOPIC_OUT = b"loopback.out"


@dataclass(frozen=True, slots=True)
class LoopbackSettings:
    """``actors.loopback`` in topology.yaml: nothing of its own (``metrics_port`` and the other
    runtime keys go to :class:`bus.topology.ActorConfig`)."""


class Loopback(Actor):
    """Echoes every message it is given, keeping the payload bytes untouched."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = load_settings(LoopbackSettings, config.settings, kind=config.kind)
        self.subscribe(TOPIC_IN)
        self.capabilities = {"echo": True}

    async def on_message(self, inbound: Inbound) -> None:
        if inbound.via is Via.EVENTS:
            await self.publish(TOPIC_OUT, inbound.message, session=inbound.env.session)
        elif inbound.via is Via.INBOX:
            await self.reply(inbound, inbound.message)
