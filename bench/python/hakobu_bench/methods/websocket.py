"""WebSocket binary frames: a header frame, then the array's bytes as one binary frame.

The peer is a FastAPI WebSocket endpoint under uvicorn (message size limit
raised, no compression); the sender uses the ``websockets`` library's
synchronous client on one connection. Each array goes as two binary messages,
the fixed header (dtype, shape) and the raw bytes, and is rebuilt with
``np.frombuffer`` on the received bytes; the answer comes back the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..channel import HEADER_SIZE, Echo, PeerFailed, as_bytes, decode_header, encode_header
from ..web import WebSocketChannel, WebSocketPeer


def raw_bytes(array: np.ndarray) -> Any:
    """The array's memory, without a copy (as_bytes cannot cast an empty multi-dimensional array)."""
    return as_bytes(array) if array.size else b""


def rebuild(header: Any, data: Any) -> np.ndarray:
    if len(header) != HEADER_SIZE:
        raise PeerFailed(f"a WebSocket header of {len(header)} bytes")
    decoded = decode_header(bytes(header))
    if decoded is None:
        raise PeerFailed("a stop header where an array was expected")
    dtype, shape, nbytes = decoded
    if len(data) != nbytes:
        raise PeerFailed(f"{len(data)} bytes arrived, the header says {nbytes}")
    array: np.ndarray = np.frombuffer(data, dtype).reshape(shape)  # a view of the received message
    return array


class WsPeer(WebSocketPeer):
    async def exchange(self, websocket: Any, echo: Echo) -> bool:
        header = await websocket.receive_bytes()
        if decode_header(header) is None:
            return False
        data = await websocket.receive_bytes()
        echo.arrived()
        answer = echo.answer(rebuild(header, data))
        del data
        await websocket.send_bytes(encode_header(answer))
        # The ASGI message itself: it takes the array's memory (send_bytes wants a bytes copy).
        await websocket.send({"type": "websocket.send", "bytes": raw_bytes(answer)})
        return True


class WebSocketFrames(WebSocketChannel):
    name = "websocket"
    label = "WebSocket (binary frames)"
    order = 52
    description = (
        "FastAPI/uvicorn WebSocket endpoint, websockets' sync client: a header message, then the raw bytes "
        "as one binary message, both ways; rebuilt with np.frombuffer"
    )
    peer_end = WsPeer
    stop_message = encode_header(None)

    def send(self, array: np.ndarray) -> None:
        self.send_messages(encode_header(array), raw_bytes(array))

    def receive(self) -> np.ndarray:
        header = self.recv()
        return rebuild(header, self.recv())


METHOD = WebSocketFrames
