"""The TTS worker actor (:mod:`.actor`): speaks utterances in 20 ms 48 kHz frames with its voice
models. One utterance's life is :mod:`.utterance`; its settings :mod:`.settings`; its
Prometheus metrics :mod:`.metrics`. ``actors.tts_worker:TtsWorker`` is what ``duplex run
tts_worker`` starts."""

from actors.tts_worker.actor import TtsWorker
from actors.tts_worker.settings import WorkerSettings

__all__ = ["TtsWorker", "WorkerSettings"]
