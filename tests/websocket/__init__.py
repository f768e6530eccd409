"""WebSocket (RFC 6455): the codec and the handshake against wsproto and h11, real clients
(``websockets``, Node's ``ws``, Chromium) against ``rawepoll serve --protocol websocket``."""
