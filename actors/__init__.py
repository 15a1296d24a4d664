"""Duplex actors: one module (or package) per actor, each a thin loop wiring a transport or
adapter to the bus. Nothing else lives here: the ``duplex`` command is :mod:`cli`."""
