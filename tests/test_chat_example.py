"""examples/chat_demo.py: three clients of the chat server read what their rooms say, only that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "chat_demo.py"


@pytest.mark.timeout(90)
def test_chat_demo_rooms_reach_their_members_only() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=80, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    parts = result.stdout.split("--- ")
    seen = {part.split("\n", 1)[0]: part for part in parts if part}
    alice, bob, carol = (seen[f"what {name} read"] for name in ("alice", "bob", "carol"))
    for lobby in (alice, bob):
        assert "[lobby] alice: hi bob" in lobby
        assert "[lobby] bob: hi alice" in lobby
        assert "anyone here?" not in lobby  # said in #random
    assert "[random] carol: anyone here?" in carol
    assert "alice: bye" not in carol  # carol had left the lobby
    assert "exited with status 0" in result.stdout
