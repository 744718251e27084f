"""HTTP carrying a shared-memory name: the array in a new multiprocessing.shared_memory segment.

The sender copies the array into a new segment and POSTs its name, dtype and
shape as JSON (one keep-alive ``httpx.Client`` connection) to FastAPI under
uvicorn; the peer attaches and views the segment (rebuild), copies its answer
into a new segment of its own and answers with that name. The sender copies
the answer out and unlinks both segments (as the ``shared-memory`` method does).
"""

from __future__ import annotations

import json
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ..channel import Echo
from ..web import HttpChannel, HttpPeer
from .shared_memory import SendsSegments, attach, copy_into_answer_segment, copy_into_new_segment, take_answer


def share(array: np.ndarray) -> tuple[shared_memory.SharedMemory, dict[str, Any]]:
    """A new segment holding a copy of ``array``, and the message that names it."""
    segment = copy_into_new_segment(array)
    return segment, {"name": segment.name, "dtype": array.dtype.str, "shape": list(array.shape)}


def echo_segment(message: Any, echo: Echo) -> dict[str, Any]:
    """In the peer: views the sender's segment (the rebuild), answers in a new segment, names it."""
    segment = attach(message["name"])
    try:
        view: np.ndarray = np.ndarray(tuple(message["shape"]), np.dtype(message["dtype"]), buffer=segment.buf)
        answer = echo.answer(view)
        del view
        reply = copy_into_answer_segment(answer)  # the sender takes it over and unlinks it
        named = {"name": reply.name, "dtype": answer.dtype.str, "shape": list(answer.shape)}
        del answer  # a segment with live views cannot be closed
        reply.close()
    finally:
        segment.close()  # the sender unlinks it
    return named


def take(message: Any) -> np.ndarray:
    """In the sender: the peer's answer, copied out of its segment, which is unlinked."""
    return take_answer(message["name"], np.dtype(message["dtype"]), tuple(message["shape"]))


class ShmPeer(HttpPeer):
    def reply(self, body: bytes, echo: Echo) -> dict[str, Any]:
        return echo_segment(json.loads(body), echo)


class HttpShm(SendsSegments, HttpChannel):
    name = "http-shm"
    label = "HTTP + shared_memory name"
    order = 53
    description = (
        "FastAPI/uvicorn peer, httpx client (keep-alive): a new multiprocessing.shared_memory segment per message, "
        "its name, dtype and shape POSTed as JSON; the peer answers in a segment of its own"
    )
    peer_end = ShmPeer
    serializable = True  # any array goes into a segment, encoded bytes too (as for shared-memory)

    def to_message(self, array: np.ndarray) -> dict[str, Any]:
        self.sent, message = share(array)
        return message

    def from_message(self, message: Any) -> np.ndarray:
        received = take(message)
        self.release_sent()
        return received

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_sent()


METHOD = HttpShm
