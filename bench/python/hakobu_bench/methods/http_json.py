"""HTTP + JSON: the array as nested lists (``tolist``) in a JSON body, POSTed to FastAPI under uvicorn.

The sender (one keep-alive ``httpx.Client`` connection) POSTs
``{"dtype", "shape", "data": array.tolist()}``; the peer reads the body, parses
it and rebuilds with ``np.array(data, dtype).reshape(shape)``, then answers the
same JSON, which the sender rebuilds the same way. Python writes a float as the
shortest text that reads back to the same double, and a float32 widened to a
Python float narrows back exactly, so the arrays come back bit for bit.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..channel import Echo
from ..web import HttpChannel, HttpPeer


def to_json(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tolist()}


def from_json(message: Any) -> np.ndarray:
    return np.array(message["data"], dtype=np.dtype(message["dtype"])).reshape(message["shape"])


class JsonPeer(HttpPeer):
    def reply(self, body: bytes, echo: Echo) -> dict[str, Any]:
        return to_json(echo.answer(from_json(json.loads(body))))


class HttpJson(HttpChannel):
    name = "http-json"
    label = "HTTP + JSON (tolist)"
    order = 50
    description = (
        "FastAPI/uvicorn peer, httpx client (keep-alive): POST JSON {dtype, shape, data: array.tolist()}, "
        "answered with the same JSON; rebuilt with np.array(data, dtype).reshape(shape)"
    )
    peer_end = JsonPeer
    max_bytes = 64 << 20
    max_bytes_why = (
        "every element becomes a Python float and about 20 characters of JSON: "
        "1 GiB of float64 takes minutes per trip and tens of GB of memory"
    )

    def to_message(self, array: np.ndarray) -> dict[str, Any]:
        return to_json(array)

    def from_message(self, message: Any) -> np.ndarray:
        return from_json(message)


METHOD = HttpJson
