"""WebSocket carrying a shared-memory name: the array in a new multiprocessing.shared_memory segment.

As ``http-shm``, over one WebSocket connection (FastAPI endpoint under
uvicorn, the ``websockets`` library's synchronous client): the sender copies
the array into a new segment and sends its name, dtype and shape as a JSON
text message; the peer views the segment (rebuild), answers in a segment of
its own and sends that name back. The sender copies the answer out and
unlinks both segments.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..channel import Echo
from ..web import WebSocketChannel, WebSocketPeer
from .http_shm import echo_segment, share, take
from .shared_memory import SendsSegments


class WsShmPeer(WebSocketPeer):
    async def exchange(self, websocket: Any, echo: Echo) -> bool:
        text = await websocket.receive_text()
        echo.arrived()
        message = json.loads(text)
        if "name" not in message:
            return False  # {"stop": true}
        await websocket.send_text(json.dumps(echo_segment(message, echo)))
        return True


class WebSocketShm(SendsSegments, WebSocketChannel):
    name = "websocket-shm"
    label = "WebSocket + shared_memory name"
    order = 54
    description = (
        "FastAPI/uvicorn WebSocket endpoint, websockets' sync client: a new multiprocessing.shared_memory segment "
        "per message, its name, dtype and shape sent as JSON text; the peer answers in a segment of its own"
    )
    peer_end = WsShmPeer
    stop_message = json.dumps({"stop": True})

    def send(self, array: np.ndarray) -> None:
        self.sent, message = share(array)
        self.send_messages(json.dumps(message))

    def receive(self) -> np.ndarray:
        received = take(json.loads(self.recv()))
        self.release_sent()
        return received

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_sent()


METHOD = WebSocketShm
