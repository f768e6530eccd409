"""A deliberately broken echo server: it flips the last byte of what it echoes.

Its first connection -- the comparison's priming one -- is echoed faithfully;
on every later connection the last byte of each chunk echoed is flipped.  Run
as a script with ``--host``, ``--port 0`` and ``--status-fd N``, like every
contender; announces itself like every peer (the ``ready`` event on ``N``,
``listening on HOST:PORT`` on stdout); exits on SIGTERM.  A comparison that measures it
must catch the corruption in its measured traffic and fail.
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys

from rawepoll.tools.compare.peers import announce, parse_args


def main() -> int:
    args = parse_args(__doc__, sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.create_server((args.host, args.port), backlog=4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    announce(listener, args.status_fd)
    faithful: socket.socket | None = None
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                selector.register(sock, selectors.EVENT_READ)
                if faithful is None:
                    faithful = sock
                continue
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data = bytearray(sock.recv(65536))
            except OSError:
                data = bytearray()
            if not data:
                selector.unregister(sock)
                sock.close()
                continue
            if sock is not faithful:
                data[-1] ^= 0xFF
            sock.sendall(data)


if __name__ == "__main__":
    sys.exit(main())
