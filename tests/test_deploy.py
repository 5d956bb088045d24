"""The deployment docs are real: the systemd unit in docs/operations.md passes
`systemd-analyze verify`, keeps secrets out of itself and may write only its folders."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from chatd.testing import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
OPERATIONS = (REPO / "docs" / "operations.md").read_text()


def unit_text() -> str:
    block = re.search(r"```ini\n# /etc/systemd/system/chatd.service\n(.*?)```", OPERATIONS,
                      re.DOTALL)
    assert block, "docs/operations.md lost its systemd unit"
    return block.group(1)


def test_the_unit_keeps_secrets_out_and_writes_only_its_own_folders():
    unit = unit_text()
    assert "Environment=" not in unit.replace("EnvironmentFile=", "")
    assert "PASSWORD" not in unit.replace("# CHATD_OPER_PASSWORD=...", "")
    assert "EnvironmentFile=/etc/chatd/chatd.env" in unit
    assert "ProtectSystem=strict" in unit and "User=chatd" in unit
    assert re.search(r"^ReadWritePaths=.*/var/lib/chatd.*/var/log/chatd", unit, re.M)
    steps = OPERATIONS[OPERATIONS.index("### As a systemd service"):]
    for step in ("useradd --system", "python3 -m venv /opt/chatd/venv",
                 "install -m 0600 -o root -g root /dev/null /etc/chatd/chatd.env",
                 "systemctl daemon-reload"):
        assert step in steps, step


def test_systemd_analyze_verifies_the_unit_without_a_warning(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_unless_ci("systemd-analyze is not installed (apt install systemd)")
    chatd = Path(sys.prefix) / "bin" / "chatd"
    assert chatd.exists(), f"{chatd}: chatd is not installed in this environment"
    unit = tmp_path / "chatd.service"
    unit.write_text(unit_text().replace("/opt/chatd/venv", sys.prefix))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # an unknown key is only a warning
