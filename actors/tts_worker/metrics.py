"""A TTS worker's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from actors.tts_worker.utterance import Utterance
from bus.schema.tts import EndReason


class TtsMetrics:
    """What a worker's speech looks like in Prometheus."""

    def __init__(
        self,
        registry: CollectorRegistry,
        phrase_cache: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
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
        cached = Gauge(
            "duplex_tts_phrase_cache_bytes",
            "Rendered audio held in the resident voices' phrase caches",
            registry=registry,
        )
        cached.set_function(lambda: phrase_cache()[0])
        bound = Gauge(
            "duplex_tts_phrase_cache_max_bytes",
            "What those phrase caches may hold at most",
            registry=registry,
        )
        bound.set_function(lambda: phrase_cache()[1])

    def ended(self, utterance: Utterance, reason: EndReason) -> None:
        self.utterances.labels(reason.value).inc()
        self.frames.inc(utterance.frames)
        if utterance.first_frame_s is not None:
            self.first_frame.observe(utterance.first_frame_s)
