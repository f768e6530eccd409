"""WebSocket (RFC 6455) on rawepoll's server: ``rawepoll serve --protocol websocket``.

* :mod:`~rawepoll.server.websocket.frames` -- the frame codec, sans-IO;
* :mod:`~rawepoll.server.websocket.handshake` -- the opening handshake, sans-IO
  (HTTP parsed by ``httptools``: the ``rawepoll[websocket]`` extra);
* :mod:`~rawepoll.server.websocket.protocol` -- the protocol on the loop
  (:class:`WebSocketProtocol`) and the application API (:class:`WebSocketApp`,
  :class:`WebSocket` handles).
"""

from __future__ import annotations

from rawepoll.server.websocket.handshake import Request
from rawepoll.server.websocket.protocol import (
    WebSocket,
    WebSocketApp,
    WebSocketOptions,
    WebSocketProtocol,
)

__all__ = ["Request", "WebSocket", "WebSocketApp", "WebSocketOptions", "WebSocketProtocol"]
