"""Duplex actors: one module per actor, each a thin loop wiring a transport or adapter to
the bus."""
