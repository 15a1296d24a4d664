"""The session supervisor: :mod:`~actors.supervisor.turns` is one session's turn-taking (pure),
:mod:`~actors.supervisor.actor` wires the cores to the bus."""

from actors.supervisor.actor import Supervisor

__all__ = ["Supervisor"]
