"""A supervisor killed outright (SIGKILL) takes its workers with it: none serves on alone."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from support.proc import wait_until

from rawepoll.tools.serverproc import ServerProcess


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["lt", "et"])
def test_workers_drain_and_exit_when_their_supervisor_is_killed(mode: str) -> None:
    with ServerProcess.serve("--port", "0", "--workers", "2", "--mode", mode) as server:
        workers = server.ready.workers
        client = socket.create_connection(server.address, timeout=10)
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"
        os.kill(server.pid, signal.SIGKILL)  # the supervisor alone, not its group
        # Each worker got SIGTERM (PR_SET_PDEATHSIG): it stops accepting and drains.
        client.sendall(b"still served while draining")
        assert client.recv(64) == b"still served while draining"
        client.close()  # the last connection gone, the drain ends
        wait_until(lambda: not any(_alive(pid) for pid in workers), "workers exited", bound=30)
