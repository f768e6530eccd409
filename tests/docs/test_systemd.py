"""The systemd unit in docs/server.md is one systemd accepts, setting by setting."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .browser import DOCS

UNIT = "rawepoll-echo.service"


def _unit_text() -> str:
    blocks = re.findall(r"```ini\n(.*?)```", (DOCS / "server.md").read_text(), re.S)
    assert len(blocks) == 1, "docs/server.md should hold one systemd unit"
    return str(blocks[0])


@pytest.mark.timeout(60)
def test_unit_passes_systemd_analyze_verify() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    rawepoll = Path(sys.executable).with_name("rawepoll")
    if not rawepoll.exists():
        pytest.skip(f"no rawepoll command next to {sys.executable}")
    text = _unit_text().replace("/opt/rawepoll/.venv/bin/rawepoll", str(rawepoll))
    with tempfile.TemporaryDirectory(prefix="rawepoll-unit-") as tmp:
        unit = Path(tmp) / UNIT
        unit.write_text(text)
        result = subprocess.run(
            [analyze, "verify", str(unit)],
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


def test_unit_documents_where_it_lives() -> None:
    assert _unit_text().startswith(f"# /etc/systemd/system/{UNIT}\n")
