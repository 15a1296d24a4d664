"""Voice activity detection: per-frame models (:mod:`.models`) and the debounced speech
start/end decisions made from them (:mod:`.detector`)."""
