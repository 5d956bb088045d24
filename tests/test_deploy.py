"""The deployment recipe is real: the systemd unit ships in the repository
(deploy/chatd.service), docs/operations.md shows it verbatim, it passes
`systemd-analyze verify`, keeps secrets out of itself, may write only its folders,
and the recipe's config puts the database in one of them (not under /etc/chatd,
read-only under ProtectSystem=strict: a restart loop)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from chatd.testing import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
OPERATIONS = (REPO / "docs" / "operations.md").read_text()
UNIT = REPO / "deploy" / "chatd.service"


def unit_text() -> str:
    return UNIT.read_text()


def unit_settings(name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", unit_text(), re.M)


def recipe() -> str:
    return OPERATIONS[OPERATIONS.index("### As a systemd service"):]


def test_the_page_shows_the_shipped_unit_verbatim_and_installs_that_file():
    blocks = re.findall(r"```ini\n(.*?)```", recipe(), re.DOTALL)
    assert blocks, "docs/operations.md lost its systemd unit"
    assert blocks[0] == unit_text(), "docs/operations.md and deploy/chatd.service differ"
    assert re.search(r"^install -m 0644 \S*deploy/chatd\.service "
                     r"/etc/systemd/system/chatd\.service$", recipe(), re.M)


def test_the_unit_keeps_secrets_out_and_writes_only_its_own_folders():
    unit = unit_text()
    assert "Environment=" not in unit.replace("EnvironmentFile=", "")
    assert "PASSWORD" not in unit.replace("# CHATD_OPER_PASSWORD=...", "")
    assert unit_settings("EnvironmentFile") == ["/etc/chatd/chatd.env"]
    assert unit_settings("ProtectSystem") == ["strict"] and unit_settings("User") == ["chatd"]
    assert re.search(r"^ReadWritePaths=.*/var/lib/chatd.*/var/log/chatd", unit, re.M)
    assert unit_settings("StateDirectoryMode") == ["0700"]
    for step in ("useradd --system", "python3 -m venv /opt/chatd/venv",
                 "install -m 0600 -o root -g root /dev/null /etc/chatd/chatd.env",
                 "systemctl daemon-reload"):
        assert step in recipe(), step


def test_the_recipes_config_keeps_the_database_where_the_service_may_write(tmp_path):
    """Step 3's commands, run on the shipped config.yaml (paths moved under tmp_path):
    the database path that results is inside the unit's StateDirectory."""
    commands = [line for line in recipe().splitlines()
                if line.startswith("sed -i ") and "/etc/chatd/config.yaml" in line]
    assert commands, "the recipe no longer sets the database path"
    config = tmp_path / "etc" / "chatd" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text((REPO / "config.yaml").read_text())
    for command in commands:
        subprocess.run(command.replace("/etc/chatd/config.yaml", str(config)), shell=True,
                       check=True, timeout=30)
    path = yaml.safe_load(config.read_text())["storage"]["path"]
    assert path, "the recipe keeps nothing on disk"
    if not PurePosixPath(path).is_absolute():  # relative to the config's folder
        path = str(PurePosixPath("/etc/chatd") / path)
    state = PurePosixPath("/var/lib") / unit_settings("StateDirectory")[0]
    assert PurePosixPath(path).is_relative_to(state), path
    writable = [PurePosixPath(p.lstrip("-")) for p in unit_settings("ReadWritePaths")[0].split()]
    assert any(PurePosixPath(path).is_relative_to(w) for w in writable), path


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
