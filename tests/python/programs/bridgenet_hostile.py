"""A hostile program in a third host: sends garbage to a receiving bridge at ENDPOINT
(tcp://ADDRESS:PORT) speaking protocol VERSION, and to its data lane at LANE_PORT, ROUNDS
times, then says "sent N" (the messages and lane connections it sent).

Each round: raw bytes that are not ZeroMQ at all over a plain TCP connection; then, from a ZeroMQ
DEALER (as a sending bridge connects), messages that fail each check of the bridge's frame format,
from the outside in (random bytes, truncated and foreign headers, a wrong version, unknown types and
kinds, meta frames that are not JSON or too large, sizes that do not match their frames, an array
claiming 8 TiB, an object dtype, an object buffer claiming 1 TB, too many frames, a STATUS sent to
a receiving end), each under a new session numbered 1 so that it reaches the deeper checks; a flood
of HELLOs from 1500 made-up sessions; and last a message larger than the bridge lets ZeroMQ take
(which makes ZeroMQ drop this connection). Then lanes: random bytes instead of a lane hello, and a
right lane hello (the receiver id read from a STATUS the bridge answered with) followed by random
bytes, then by a prefix announcing far more than it sends. The header layout is written out here by
hand, from the bridge's documented format, not taken from the bridge's code.
"""

import json
import os
import socket
import struct
import sys
import time

import zmq

HEADER = struct.Struct("<4sBBxx")  # magic, version, type
DATA = struct.Struct("<16sQQB")  # session, seq, acked, kind
HELLO_BODY = struct.Struct("<16sQ")
HELLO, DATA_TYPE, STATUS = 1, 2, 4
BYTES, ARRAY, OBJECT = 1, 2, 3

endpoint, rounds, VERSION, lane_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
address, port = endpoint.rsplit("/", 1)[1].rsplit(":", 1)


def data(kind: int, meta: bytes, *payload: bytes) -> list[bytes]:
    header = HEADER.pack(b"HKBR", VERSION, DATA_TYPE) + DATA.pack(os.urandom(16), 1, 0, kind)
    return [header, meta, *payload]


def array_meta(typestr: str, shape: list[int]) -> bytes:
    return json.dumps({"t": typestr, "s": shape, "o": "C"}).encode()


garbage: list[list[bytes]] = [
    [os.urandom(100)],
    [b"HKBR"],
    [b"XXXX\x01\x02\x00\x00" + bytes(41)],
    [HEADER.pack(b"HKBR", 9, DATA_TYPE) + DATA.pack(os.urandom(16), 1, 0, ARRAY), b"{}", b"x"],
    [HEADER.pack(b"HKBR", VERSION, 77) + bytes(16)],
    [HEADER.pack(b"HKBR", VERSION, DATA_TYPE) + bytes(5)],
    data(9, b"", b"x"),
    data(ARRAY, array_meta("<f8", [2**40]), bytes(16)),
    data(ARRAY, array_meta("|O", [2]), bytes(16)),
    data(ARRAY, b"\xff{not json", bytes(16)),
    data(ARRAY, array_meta("<f8", [4]), bytes(31)),
    data(ARRAY, b"x" * 100_000, bytes(8)),
    data(ARRAY, json.dumps({"t": "<f8", "s": [[1]], "o": "Z"}).encode(), bytes(8)),
    data(OBJECT, json.dumps({"b": [[0, 10**12]]}).encode(), b"stream", b"short"),
    data(BYTES, b"meta?", b"x"),
    data(ARRAY, array_meta("<f8", [1]))[:2],
    [HEADER.pack(b"HKBR", VERSION, STATUS) + bytes(41)],
    [HEADER.pack(b"HKBR", VERSION, HELLO) + HELLO_BODY.pack(os.urandom(16), 0), b"extra", b"frames"],
    [b"x"] * 5000,
]
sent = 0
for _ in range(rounds):
    with socket.create_connection((address, int(port)), timeout=30) as raw:
        raw.sendall(os.urandom(65536))
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 5000)
    dealer.connect(endpoint)
    for message in garbage:
        dealer.send_multipart(message)
        sent += 1
    for _ in range(1500):
        dealer.send(HEADER.pack(b"HKBR", VERSION, HELLO) + HELLO_BODY.pack(os.urandom(16), 2**40))
        sent += 1
    # The receiver id, from the STATUS that answers a HELLO (header, then the receiver's 16 bytes).
    receiver = os.urandom(16)
    dealer.send(HEADER.pack(b"HKBR", VERSION, HELLO) + HELLO_BODY.pack(os.urandom(16), 0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and dealer.poll(1000):
        reply = dealer.recv()
        if reply[:4] == b"HKBR" and reply[5] == STATUS:
            receiver = reply[8:24]
            break
    lane_hello = struct.pack("<4sB3x16s16s", b"HKBL", VERSION, os.urandom(16), receiver)
    for stream in (
        os.urandom(65536),
        lane_hello + os.urandom(65536),
        lane_hello + struct.pack("<4sIQ", b"HKBM", 3, 2**40) + struct.pack("<3I", 40, 2, 2**31),
    ):
        try:
            with socket.create_connection((address, lane_port), timeout=30) as raw:
                raw.sendall(stream)
        except OSError:
            pass  # closed by the bridge before everything went: what it should do
        sent += 1
    dealer.send_multipart(data(BYTES, b"", bytes(4 * 2**20)))  # over the bridge's limit
    sent += 1
    dealer.close()  # lingers until sent (or 5 s)
    context.term()
    time.sleep(0.2)
print("sent", sent, flush=True)
