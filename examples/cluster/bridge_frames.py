"""Camera frames from one host to another: hakobu queues on each host, hakobu.Bridge between.

    host B (consumer):  python bridge_frames.py receive tcp://*:5555
    host A (producer):  python bridge_frames.py send tcp://HOST_B:5555 [FRAMES]
    one machine, both:  python bridge_frames.py demo [FRAMES]

On each host the programs talk to a local queue through shared memory; the bridge
carries the queue's messages over TCP (ZeroMQ) and the end of the stream with them.
Plain TCP is for trusted networks: add secret_key/peer_key/allowed_keys (CurveZMQ,
`hakobu bridge keys DIR` makes the key files) anywhere else.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

import hakobu

QUEUE_A, QUEUE_B = "frames-out", "frames-in"  # different names: in `demo` both "hosts" share a domain


def send(endpoint: str, frames: int) -> None:
    """Host A: a producer puts frames on its local queue; the bridge sends them to host B."""
    with hakobu.Queue(QUEUE_A, capacity=16) as queue, hakobu.Bridge(QUEUE_A, send_to=endpoint) as bridge:
        for i in range(frames):
            frame = np.full((480, 640, 3), i % 256, dtype=np.uint8)  # a stand-in for a camera frame
            queue.put({"index": i, "frame": frame})
        queue.close()  # the end of the stream travels to host B
        bridge.join()  # returns once host B has everything
        print(f"sent {frames} frames, {bridge.stats()['bytes'] / 2**20:.0f} MiB", flush=True)


def receive(endpoint: str) -> None:
    """Host B: the bridge puts what arrives on the local queue; a consumer reads it."""
    # The frames travel as objects (dicts), which a receiving end takes from a peer without keys
    # only when told the network is trusted (allow_objects=True); with keys, always.
    trusted = True
    with (
        hakobu.Queue(QUEUE_B, capacity=16) as queue,
        hakobu.Bridge(QUEUE_B, receive_at=endpoint, allow_objects=trusted) as bridge,
    ):
        print(f"receiving at {bridge.endpoint}", flush=True)
        count = 0
        for message in queue:  # ends when host A's stream ends
            assert message["frame"][0, 0, 0] == message["index"] % 256
            count += 1
        print(f"received {count} frames", flush=True)
    hakobu.remove(QUEUE_B)


def demo(frames: int) -> None:
    """Both roles as two programs on this machine, over loopback."""
    receiver = subprocess.Popen(
        [sys.executable, __file__, "receive", "tcp://127.0.0.1:*"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        endpoint = receiver.stdout.readline().split()[-1]
        sender = subprocess.Popen([sys.executable, __file__, "send", endpoint, str(frames)])
        try:
            # The sending end waits for the receiving one to acknowledge everything: if the
            # receiving program ends first (an error, which it printed), waiting is pointless.
            while sender.poll() is None:
                if receiver.poll() not in (None, 0):
                    raise SystemExit(f"the receiving program failed (exit {receiver.returncode}), see above")
                time.sleep(0.1)
        finally:
            sender.kill()
            sender.wait()
        if sender.returncode != 0:
            raise SystemExit(f"the sending program failed (exit {sender.returncode}), see above")
        print(receiver.communicate(timeout=300)[0], end="")
    finally:
        receiver.kill()
        hakobu.remove(QUEUE_A)


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else "demo"
    if role == "send":
        send(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100)
    elif role == "receive":
        receive(sys.argv[2])
    else:
        demo(int(sys.argv[2]) if len(sys.argv) > 2 else 100)
