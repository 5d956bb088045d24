"""Counters for operators: what Redis shows in INFO, chatd keeps here.

Plain integer attributes and small dicts, incremented on the loop thread, so a
counter costs one attribute update on the hot path.  :meth:`Stats.snapshot`
gives a copy for ``/stats`` and the Prometheus exporter (which may read from
another thread; it only ever reads).
"""

from __future__ import annotations

from typing import Any


class Stats:
    """Everything chatd counts; see docs/operations.md for the meaning of each."""

    __slots__ = (
        "connections_total",
        "deliveries",
        "disconnects",
        "log_dropped",
        "loop_lag_max_seconds",
        "loop_lag_seconds",
        "messages_in",
        "rejected",
    )

    def __init__(self) -> None:
        self.connections_total = 0
        self.messages_in = 0  # chat lines accepted (after filters)
        self.deliveries = 0  # copies of room lines handed to recipients
        #: Connections refused at accept, by reason (server_full, per_ip, connect_rate, ...).
        self.rejected: dict[str, int] = {}
        #: Connections cut by a limit, by kind (obuf_hard, obuf_soft, send_timeout, ...).
        self.disconnects: dict[str, int] = {}
        self.loop_lag_seconds = 0.0
        self.loop_lag_max_seconds = 0.0
        self.log_dropped = 0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def disconnect(self, kind: str) -> None:
        self.disconnects[kind] = self.disconnects.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            name: dict(value) if isinstance(value, dict) else value
            for name in self.__slots__
            for value in (getattr(self, name),)
        }
