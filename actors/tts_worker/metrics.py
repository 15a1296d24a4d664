"""A TTS worker's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from actors.tts_worker.utterance import Utterance
from bus.schema.tts import EndReason


class TtsMetrics:
    """What a worker's speech looks like in Prometheus."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.utterances = Counter(
            "duplex_tts_utterances_total",
            "Utterances ended, by reason",
            ["reason"],
            registry=registry,
        )
        self.frames = Counter("duplex_tts_frames_total", "Frames sent", registry=registry)
        self.first_frame = Histogram(
            "duplex_tts_first_frame_seconds",
            "From tts.start to the first frame sent",
            registry=registry,
            buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
        )

    def ended(self, utterance: Utterance, reason: EndReason) -> None:
        self.utterances.labels(reason.value).inc()
        self.frames.inc(utterance.frames)
        if utterance.first_frame_s is not None:
            self.first_frame.observe(utterance.first_frame_s)
