"""How evenly do forked workers share connections?  (docs/server.md, "Workers")

Starts ``rawepoll serve --workers W``, opens N connections one after another
(each verified by a one-byte echo), then reads ``per_worker_open`` from the
server's status line.  Sequential connects are the hard case for a shared
``EPOLLEXCLUSIVE`` listener: there is always an idle worker to wake.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys


def measure(workers: int, conns: int, mode: str) -> list[int]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rawepoll",
            "serve",
            "--port",
            "0",
            "--mode",
            mode,
            "--workers",
            str(workers),
            "--stats-interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert server.stdout is not None
        match = re.search(r":(\d+) \(", server.stdout.readline())
        if match is None:
            raise RuntimeError("the server did not start")
        for _ in range(conns):
            client = socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10)
            clients.append(client)
            client.sendall(b"x")
            if client.recv(1) != b"x":
                raise RuntimeError("echo failed")
        for _ in range(200):  # status lines until one has counted every connection
            line = server.stdout.readline()
            found = re.search(r"per_worker_open=([\d,]+)", line)
            if found:
                counts = [int(x) for x in found.group(1).split(",")]
                if sum(counts) == conns:
                    return counts
        raise RuntimeError("no status line counted every connection")
    finally:
        for client in clients:
            client.close()
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--conns", type=int, default=4000)
    args = parser.parse_args()
    for mode in ("lt", "et"):
        counts = measure(args.workers, args.conns, mode)
        worst = max(counts) * len(counts) / sum(counts)
        print(
            f"{mode}: {args.conns} connections over {args.workers} workers: "
            f"{', '.join(map(str, counts))} (max/mean {worst:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
