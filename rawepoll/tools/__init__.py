"""What measures rather than serves: the tools behind the ``rawepoll`` command.

Nothing here is imported by the library (``rawepoll``, ``rawepoll.server``);
each tool uses the library as any user would.

* :mod:`rawepoll.tools.loadgen` -- ``rawepoll bench``: a closed-loop echo load
  generator that verifies every byte, over many processes and source addresses;
* :mod:`rawepoll.tools.compare` -- ``rawepoll compare``: rawepoll next to
  ``select``, ``selectors``, asyncio and uvloop, side by side;
* :mod:`rawepoll.tools.c1m` -- ``rawepoll c1m``: a million connections in a
  private network namespace, measured;
* :mod:`rawepoll.tools.demo` -- ``rawepoll demo``: the main job end to end;
* :mod:`rawepoll.tools.serverproc` -- a ``rawepoll serve`` child process, started,
  awaited through its machine-readable status and stopped; used by all of the above
  and by the tests.
"""
