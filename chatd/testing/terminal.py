"""Real terminal clients (``nc``, ``ncat``, ``socat``, ``telnet``) on a pseudo-terminal.

The people chatd is for type into a terminal running one of these programs, so
the end-to-end tests do exactly that: the program runs on a pty (through
pexpect), keystrokes go through the terminal's line discipline (where Enter is
CR turned into LF, and DEL erases before the program ever sees it), and what
the program prints is read back line by line.  The pty's own echo is turned off
so that what is read is only what the server sent.

pexpect is a test dependency (the ``test`` extra), imported only when a
terminal client is started.
"""

from __future__ import annotations

import shutil
import time

from .probes import skip_unless_ci
from .process import DEFAULT_TIMEOUT, ChatClient

#: How each program is told to connect; ``{host}`` and ``{port}`` are filled in.
PROGRAMS: dict[str, tuple[str, ...]] = {
    "nc": ("nc", "{host}", "{port}"),
    "ncat": ("ncat", "{host}", "{port}"),
    "socat": ("socat", "-", "TCP:{host}:{port}"),
    "telnet": ("telnet", "{host}", "{port}"),
}

#: The Debian package of each program, for the message when one is missing.
PACKAGES = {"nc": "netcat-openbsd", "ncat": "ncat", "socat": "socat", "telnet": "telnet"}


class TerminalClient(ChatClient):
    """A chat client that is a real program on a pty; the :class:`ChatClient` API.

    ``send(line)`` types the line and presses Enter; ``type(keys)`` types raw
    keys (escape sequences, Ctrl-H) without Enter.  Reads have timeouts like
    every test client's.  A program that is not installed skips the test, or
    fails it in CI.
    """

    def __init__(self, program: str, address: tuple[str, int], *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        import pexpect  # the test extra; only needed here

        path = shutil.which(PROGRAMS[program][0])
        if path is None:
            skip_unless_ci(f"{program} is not installed (apt install {PACKAGES[program]})")
        host, port = address
        argv = [part.format(host=host, port=port) for part in PROGRAMS[program][1:]]
        self.program = program
        self._start_reading(timeout)
        self._pexpect = pexpect
        self.child = pexpect.spawn(path, argv, timeout=timeout, echo=False)

    # -- typing --------------------------------------------------------------

    def send(self, line: str) -> None:
        """Type ``line`` and press Enter."""
        self.child.send(line.encode("utf-8") + b"\r")

    def type(self, keys: str | bytes) -> None:
        """Type raw keys, without Enter."""
        self.child.send(keys.encode("utf-8") if isinstance(keys, str) else keys)

    def send_raw(self, data: bytes) -> None:
        self.type(data)

    # -- reading -------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            return False
        try:
            data = self.child.read_nonblocking(65536, timeout=remaining)
        except self._pexpect.TIMEOUT:
            return False
        except self._pexpect.EOF:
            self.eof = True
            return False
        # The terminal turns each LF into CR LF on output.
        self._buffer += data.replace(b"\r\n", b"\n")
        return True

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()
