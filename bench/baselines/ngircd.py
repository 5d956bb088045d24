"""Baseline: ngIRCd (Debian's ``ngircd``, C), for the IRC scenarios of bench/run.py.

Writes a throwaway config (loopback only, a free port, no DNS/ident/PAM lookups, the
system's /etc/ngircd never read: ``IncludeDir`` is an empty folder) and becomes
ngIRCd (``exec``: the benchmark's ``-P`` CPU reading and its SIGTERM reach ngIRCd
itself).  A forked helper waits until the port accepts, then writes the port file,
so bench/run.py never connects before ngIRCd listens.

Flood limits, lifted where ngIRCd's config allows:

* ``MaxConnectionsIP = 0``, ``MaxConnections = 0`` (every client comes from 127.0.0.1);
* ``MaxJoins = 0``; ``PingTimeout`` long (receivers never speak);
* an ``[Operator]`` block (``bench``/``bench``) so the load generator's senders
  (``loadgen -O bench:bench``) become operators and set user mode ``+F``,
  ngIRCd's "relaxed flood protection".

What cannot be lifted: its listen backlog is 10 (compiled in): 512 connects at once
overflow it and the kernel's SYN retries stall the setup for minutes, so bench/run.py
runs the load generator with ``-C 100`` (handshakes in flight) against it.  And
ngIRCd's per-connection command penalty has no setting.
Clients that are not operators (the receivers) stay under it: their NICK, USER and
JOIN are throttled, which slows the setup (not measured) but not the traffic, since
receivers send nothing then; and ``+F`` relaxes the senders' penalty, it does not
remove it.  Started as root, ngIRCd drops to ``nobody`` itself (``ServerUID``).

Run: ``python bench/baselines/ngircd.py --port-file F``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
# bench/baselines/ngircd.py: a throwaway ngIRCd for the benchmark, loopback only.
[Global]
Name = irc.bench.local
Info = chatd benchmark baseline
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = bench
{drop}
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
PingTimeout = 3600
PongTimeout = 600
[Options]
IncludeDir = {folder}/conf.d
DNS = no
Ident = no
PAM = no
[Operator]
Name = bench
Password = bench
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def announce_when_listening(port: int, port_file: Path, timeout: float = 20.0) -> None:
    """In a forked child: write ``port_file`` once ``port`` accepts (bounded), then exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.02)  # another process's port: nothing to wait on but time
            continue
        port_file.write_text(f"{port}\n")
        break
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
    if not os.access(binary, os.X_OK):
        sys.exit("bench: ngircd is not installed (apt-get install ngircd)")
    folder = Path(tempfile.mkdtemp(prefix="ngircd-", dir=args.port_file.parent))
    folder.chmod(0o755)  # ngIRCd drops root to nobody, which must still read the config
    (folder / "conf.d").mkdir(mode=0o755)
    port = free_port()
    drop = "ServerUID = 65534\nServerGID = 65534" if os.geteuid() == 0 else ""
    conf = folder / "ngircd.conf"
    conf.write_text(CONFIG.format(port=port, folder=folder, drop=drop))
    conf.chmod(0o644)
    if os.fork() == 0:
        announce_when_listening(port, args.port_file)
    os.execv(binary, [binary, "--nodaemon", "--config", str(conf)])


if __name__ == "__main__":
    main()
