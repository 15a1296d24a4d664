"""Speech recognition adapters (faster-whisper)."""
