"""A delivery backend plugin from outside chatd's tree whose presence answers come later.

Loaded by path (``plugin_dirs``), as a cluster backend (Redis) would be installed, it
answers ``chatd_delivery_backend`` with the test kit's :class:`DeferredBackend`: every
presence question (nick claims, lookups, members, room listings) is answered on a
later pass of the loop, as a networked backend's would be, with ``plugins:
{laterpresence: {silent: true}}`` never.
"""

from __future__ import annotations

from typing import Any

from chatd import hookimpl
from chatd.testing.backends import DeferredBackend

PLUGIN_NAME = "laterpresence"


@hookimpl
def chatd_delivery_backend(server: Any, local: Any) -> Any:
    backend = DeferredBackend(local, server.call_soon)
    backend.silent = bool(server.plugin_config(PLUGIN_NAME).get("silent", False))
    return backend
