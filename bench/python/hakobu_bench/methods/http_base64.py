"""HTTP + base64: the array's raw bytes as a base64 string in a JSON body, POSTed to FastAPI under uvicorn.

The sender (one keep-alive ``httpx.Client`` connection) POSTs
``{"dtype", "shape", "data": base64 of the bytes}``; the peer reads the body,
parses it, decodes the base64 and rebuilds with ``np.frombuffer``, then
answers the same JSON, which the sender decodes the same way.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from ..channel import Echo, as_bytes
from ..web import HttpChannel, HttpPeer


def to_json(array: np.ndarray) -> dict[str, Any]:
    data = base64.b64encode(as_bytes(array) if array.size else b"").decode("ascii")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def from_json(message: Any) -> np.ndarray:
    raw = base64.b64decode(message["data"])
    array: np.ndarray = np.frombuffer(raw, np.dtype(message["dtype"])).reshape(message["shape"])
    return array


class Base64Peer(HttpPeer):
    def reply(self, body: bytes, echo: Echo) -> dict[str, Any]:
        return to_json(echo.answer(from_json(json.loads(body))))


class HttpBase64(HttpChannel):
    name = "http-base64"
    label = "HTTP + JSON (base64)"
    order = 51
    description = (
        "FastAPI/uvicorn peer, httpx client (keep-alive): POST JSON {dtype, shape, data: base64 of the bytes}, "
        "answered with the same JSON; rebuilt with np.frombuffer"
    )
    peer_end = Base64Peer

    def to_message(self, array: np.ndarray) -> dict[str, Any]:
        return to_json(array)

    def from_message(self, message: Any) -> np.ndarray:
        return from_json(message)


METHOD = HttpBase64
