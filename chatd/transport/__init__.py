"""Transports: one socket each, read until EAGAIN, written through a queue.

``connection`` is plain TCP (:class:`~chatd.transport.connection.Connection`:
the edge-triggered rules, output limits, the graceful close); ``tls`` wraps
one in TLS on memory BIOs; ``proxy`` reads a PROXY protocol header in front of
whatever comes next.  A protocol (:mod:`chatd.protocols`) sits on top of a
transport and never sees the socket; the transport never looks inside the
bytes (DESIGN.md section 2).
"""
