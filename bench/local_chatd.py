"""Start a chatd process from this checkout on a config of the caller's (bench scripts).

The server runs from the repository (``python -m chatd``) in a folder of its
own, with its log in ``chatd.log`` there; loopback only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_chatd(folder: Path, config: str, *, cpus: set[int] | None = None
                ) -> tuple[subprocess.Popen[bytes], int]:
    """Write ``config`` to ``folder/config.yaml``, start chatd on it, return it and its port.

    ``cpus`` pins the server (and its threads) to those cores.
    """
    (folder / "config.yaml").write_text(config)
    port_file = folder / "port"
    with open(folder / "chatd.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "--config", str(folder / "config.yaml"),
             "--port-file", str(port_file)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    deadline = time.monotonic() + 15
    while not (port_file.exists() and port_file.read_text().endswith("\n")):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError((folder / "chatd.log").read_text())
        time.sleep(0.02)
    return proc, int(port_file.read_text().split()[0])
