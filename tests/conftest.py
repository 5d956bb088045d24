"""Shared fixtures: chatd's own test kit (``chatd.testing``) is used throughout, and a
small disk that fills up (the store's tests of a full disk)."""

import subprocess

import pytest

from chatd.testing.probes import skip_unless_ci

pytest_plugins = ["chatd.testing"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root: mount).  In CI a failure to mount fails the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        skip_unless_ci(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
