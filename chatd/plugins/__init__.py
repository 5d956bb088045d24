"""The plugin host: find plugins, register them, and call their code safely.

One job per module, each importing only the ones below it (``pyproject.toml``'s
import contracts check it):

* :mod:`.host` — :class:`PluginHost` (``server.hooks``): registers plugins with
  pluggy and calls hooks, one implementation at a time;
* :mod:`.timers` — each plugin's timers and worker tasks
  (:class:`PluginTimer`, :class:`PluginTask`);
* :mod:`.owners` — which plugin a callback or a thread acts for;
* :mod:`.guard` — the one guarded call every piece of plugin code goes
  through: attributed, timed, failures isolated and counted, the circuit
  breaker;
* :mod:`.loader` — finding and importing plugins (built-ins, entry points,
  modules, plugin folders); :class:`PluginLoadError`.

``from chatd.plugins import X`` is the way in for every name below.
"""

from .guard import Guard
from .host import PluginHost, PluginInfo
from .loader import (
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    PluginLoadError,
    plugin_modules,
    restore_plugin_modules,
)
from .timers import PluginTask, PluginTimer, Scheduler

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Guard",
    "PluginHost",
    "PluginInfo",
    "PluginLoadError",
    "PluginTask",
    "PluginTimer",
    "Scheduler",
    "plugin_modules",
    "restore_plugin_modules",
]
