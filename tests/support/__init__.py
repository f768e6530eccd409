"""What the tests share, one module per kind of thing; the conftests hold only fixtures.

* :mod:`support.children` -- child interpreters and commands: the repository's
  environment, bounded runs, process groups;
* :mod:`support.fds` -- real descriptors: fill and drain a socket, count our
  descriptors, read an epoll instance's interest list from ``/proc``;
* :mod:`support.proc` -- other ``/proc`` readings: which system call a thread
  sleeps in, another process's descriptors, CPU, memory, children, sockets;
  and :func:`~support.proc.wait_until`, the one bounded poll of a condition;
* :mod:`support.clients` -- standard-library echo clients (the code under test
  is never its own oracle): exact reads, round trips, many clients at once;
* :mod:`support.servers` -- servers in a child process, started and stopped
  through their JSON status stream (:mod:`rawepoll.tools.serverproc`);
* :mod:`support.loadgen` -- ``rawepoll bench`` as a command, and a threaded
  echo server in the test process that spoils messages on purpose;
* :mod:`support.tools` -- the hardening tools as commands
  (``python -m hardening.X ... --json``).

Test modules import these by name (``from support.fds import fill``): ``tests/``
is on ``sys.path`` because ``tests/conftest.py`` is a rootdir conftest outside
any package.  Nothing here imports ``hardening``: its tools are run as commands.
"""
