"""Prometheus metrics: chatd's counters over HTTP, off by default, loopback only.

The exporter is prometheus_client's own HTTP server (an optional dependency:
``pip install "chatd[metrics]"``), which answers on a thread of its own.  That
thread never touches live server state: the loop publishes a copy of the
counters once a second (:meth:`chatd.server.Server.publish_stats`) and the
collector reads that copy, so a scrape can neither race the loop nor slow it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("chatd.metrics")

#: name -> (help, snapshot key) for plain counters and gauges.
_COUNTERS = {
    "chatd_connections": ("Client connections accepted.", "connections_total"),
    "chatd_messages_in": ("Chat lines received from clients.", "messages_in"),
    "chatd_deliveries": ("Copies of room lines handed to recipients.", "deliveries"),
    "chatd_bytes_in": ("Bytes received from clients.", "bytes_in"),
    "chatd_bytes_out": ("Bytes sent to clients.", "bytes_out"),
    "chatd_log_records_dropped": ("Log records dropped because the log sink was slow.",
                                  "log_dropped"),
    "chatd_storage_committed": ("Writes committed to the database.", "storage_committed"),
    "chatd_storage_dropped": ("Writes dropped: the database failed for longer than "
                              "storage.queue_max writes.", "storage_dropped"),
    "chatd_storage_failures": ("Failed commit attempts (each retried).", "storage_failures"),
    "chatd_storage_rejected": ("Bad writes dropped (a statement the database refused, a value it "
                               "cannot store, a write function that raised); logged.",
                               "storage_rejected"),
    "chatd_storage_writer_restarts": ("Times the database writer started over (an error "
                                      "escaped it, or its thread died and the watchdog "
                                      "replaced it).", "storage_writer_restarts"),
    "chatd_cluster_gaps": ("Events from other nodes this node missed (jumps in a channel's "
                           "sequence numbers).", "cluster_gaps"),
    "chatd_cluster_recovered": ("Missed room events recovered from the shared history.",
                                "cluster_recovered"),
    "chatd_cluster_bad_messages": ("Payloads from Redis refused (malformed, oversize, unknown "
                                   "version).", "cluster_bad_messages"),
    "chatd_cluster_dropped": ("Batches not published: Redis down or the outbox full.",
                              "cluster_dropped"),
    "chatd_cluster_duplicates": ("Batches from Redis dropped: every event in them was heard "
                                 "before (republished, replayed).", "cluster_duplicates"),
    "chatd_cluster_batches_in": ("Batches received from other nodes.", "cluster_batches_in"),
    "chatd_cluster_batches_out": ("Batches published to other nodes.", "cluster_batches_out"),
    "chatd_cluster_handler_errors": ("Messages from Redis whose handling raised (a bug: "
                                     "logged, the link goes on).", "cluster_handler_errors"),
}
_GAUGES = {
    "chatd_clients": ("Clients connected now.", "clients"),
    "chatd_rooms": ("Rooms that exist now.", "rooms"),
    "chatd_output_bytes_queued": ("Output bytes waiting for slow readers.", "output_bytes_queued"),
    "chatd_loop_lag_seconds": ("How late the last 1-second timer fired.", "loop_lag_seconds"),
    "chatd_max_clients": ("The enforced client limit.", "max_clients"),
    "chatd_storage_ok": ("1 while the database takes writes, 0 while it fails.", "storage_ok"),
    "chatd_storage_queued": ("Writes waiting for the database.", "storage_queued"),
    "chatd_cluster_up": ("1 while the link to Redis is up, 0 while it is down.", "cluster_up"),
}
#: Snapshot keys served only when present: the cluster's, absent on a single process.
_OPTIONAL_PREFIX = "cluster_"
#: name -> (help, snapshot key, label name) for counters split by a label.
_LABELLED = {
    "chatd_rejected_connections": ("Connections refused at accept.", "rejected", "reason"),
    "chatd_limit_disconnections": ("Clients disconnected by a limit.", "disconnects", "kind"),
    "chatd_plugin_errors": ("Exceptions raised by plugin code.", "plugin_errors", "plugin"),
    "chatd_plugin_slow_calls": ("Plugin calls over slow_hook_seconds.", "plugin_slow_calls",
                                "plugin"),
    "chatd_storage_rejected_by_owner": ("Bad writes dropped, by the plugin that queued them.",
                                        "storage_rejected_by", "owner"),
}


class ChatdCollector:
    """A prometheus_client collector over the last published stats snapshot."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        data = self._snapshot()
        for name, (text, key) in _COUNTERS.items():
            if _served(key, data):
                yield CounterMetricFamily(name, text, value=data.get(key, 0))
        for name, (text, key) in _GAUGES.items():
            if _served(key, data):
                yield GaugeMetricFamily(name, text, value=data.get(key, 0))
        for name, (text, key, label) in _LABELLED.items():
            family = CounterMetricFamily(name, text, labels=[label])
            for value, count in sorted(data.get(key, {}).items()):
                family.add_metric([value], count)
            yield family


def _served(key: str, data: dict[str, Any]) -> bool:
    """Every metric is served (0 until counted), but the cluster's only on a cluster node."""
    return key in data or not key.startswith(_OPTIONAL_PREFIX)


def start_exporter(host: str, port: int, snapshot: Callable[[], dict[str, Any]]) -> Any:
    """Serve /metrics on ``host:port`` from a thread; returns the HTTP server.

    Raises RuntimeError with an install hint when prometheus_client is missing.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise RuntimeError(
            'metrics.enabled needs prometheus_client: pip install "chatd[metrics]"'
        ) from exc
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ChatdCollector(snapshot))
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    bound = httpd.server_address
    log.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
    return httpd
