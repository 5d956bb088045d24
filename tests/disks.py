"""Filling the ``small_disk`` fixture's tmpfs (tests/conftest.py) for the full-disk tests."""

from __future__ import annotations

import contextlib
from pathlib import Path

#: What the server logs when its writer meets the full disk (chatd/server.py), and
#: nothing else does: the store's own warnings may name a folder called "disk".
DISK_PROBLEM = r"chat goes on, writes wait"


def take_every_free_byte(folder: Path, name: str = "filler") -> Path:
    """Fill the file system holding ``folder`` to the last byte, with a file ``name``.

    Blocks of shrinking size: a 64 KiB block that does not fit leaves up to 64 KiB
    free, room for tens of chat lines, and a test that fills "the disk" and then
    finds its writes succeeding waits for a problem that never comes.  Unbuffered,
    so a short write cannot be retried (and raise) at close.
    """
    filler = folder / name
    with open(filler, "wb", buffering=0) as out:
        for size in (65536, 4096, 512, 64, 1):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    out.write(block)
    return filler
