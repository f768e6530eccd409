"""A handler whose every worker dies as it starts: a crash loop, for the supervisor's back-off."""

from __future__ import annotations

import os
from typing import Any, ClassVar


class DiesAtStart:
    shared: ClassVar[bool] = True

    @staticmethod
    def worker_started(hub: Any) -> None:
        os._exit(3)

    def data_received(self, data: memoryview) -> bytes:
        return bytes(data)

    def eof_received(self) -> None:
        return None
