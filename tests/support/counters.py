"""A server that many examples of a property share, and what each example added to its counters.

Starting a server per hypothesis example would cost most of a test's time, so a property runs
its examples against one long-lived server (started with ``--stats-interval``) and compares
*deltas*: :meth:`SharedServer.delta` waits until the server is quiet -- every connection the
example made has been closed -- and returns how much each counter grew since the last call.

Why the status event *after* the one that shows the last close: with forked workers the
supervisor reads a worker's slot while that worker may be copying its counters into it, one
field at a time, so one event may show a new ``closed`` beside an old ``delivered``.  Once the
server is quiet nothing is copied any more, and the next event is whole.

An example that fails leaves the server in an unknown state: :meth:`SharedServer.example`
stops it, and the next example starts a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from support.servers import EVENT_BOUND, Server

Counters = dict[str, int]


def settle(server: Server, closed: int | None = None, bound: float = EVENT_BOUND) -> Counters:
    """The counters once no connection is open (and at least ``closed`` were closed in all):
    the status event after the first that shows it.  Fails after ``bound`` s."""

    def quiet(event: dict[str, object]) -> bool:
        counters = event["counters"]
        assert isinstance(counters, dict)
        return counters["open"] == 0 and (closed is None or counters["closed"] >= closed)

    server.status(quiet, bound)
    return dict(server.status(lambda event: True, bound)["counters"])


def stop_quietly(server: Server) -> None:
    """Read the status stream (a full pipe would hold back the ``exit`` event), close the
    clients, stop: SIGTERM, a bounded drain, SIGKILL of the group."""
    server.poll_events()
    server.cleanup()


class SharedServer:
    """One server for many examples, started on first use, replaced after a failed example."""

    def __init__(self, start: Callable[[], Server]) -> None:
        self._start = start
        self._server: Server | None = None
        self.base: Counters = {}

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = self._start()
            self.base = settle(self._server)
        return self._server

    @contextlib.contextmanager
    def example(self) -> Iterator[Server]:
        """The server for one example; stopped (to be started afresh) if the example fails."""
        server = self.server
        try:
            yield server
        except BaseException:
            self.close()
            raise
        server.close_clients()

    def delta(self, connections: int) -> Counters:
        """How much every counter grew since the last delta (or the start), once the
        ``connections`` this example opened are all closed."""
        server = self.server
        after = settle(server, closed=self.base["closed"] + connections)
        grown = {name: after[name] - self.base[name] for name in after}
        self.base = after
        return grown

    def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            stop_quietly(server)
