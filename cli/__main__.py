"""``python -m cli``: the ``duplex`` command without the installed console script."""

from __future__ import annotations

from cli import main

main()
