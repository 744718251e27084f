"""A hostile peer: sends object messages whose unpickling would run a command that creates
the file argv[2], then a plain object, then "END", on queue argv[1].

    1. an object whose __reduce__ calls os.system (sent with an ordinary put);
    2. a hand-written object message (protocol 0 stream naming os.system), put as raw bytes
       in hakobu's object format through the core's loan;
    3. a dict of plain built-in types with a large out-of-band buffer of plain bytes;
    4. "END".
"""

import os
import pickle
import struct
import sys

import hakobu
from hakobu import _codec


class Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


name, marker = sys.argv[1], sys.argv[2]
command = f"touch {marker}"
with hakobu.Queue(name) as queue:
    queue.put(Evil(command))
    stream = b"cos\nsystem\n(V" + command.encode() + b"\ntR."
    header = struct.pack("<4sI", b"HKP1", 0)
    loan = queue._core.loan(len(header) + len(stream), _codec.KIND_OBJECT, 0)
    payload = memoryview(loan)
    payload[: len(header)] = header
    payload[len(header) :] = stream
    payload.release()
    queue._core.put_loan(loan, None)
    big = pickle.PickleBuffer(bytes(range(256)) * 1024)  # 256 KiB: travels out of band
    queue.put(
        {"n": [1, 2.5, 3j, None, True], "s": {"a", frozenset({1})}, "b": (b"x", bytearray(b"y")), "big": big}
    )
    queue.put("END")
