"""A separately started publisher or subscriber of a hakobu.Topic (tests/python/test_topic*.py).

Messages are in the cross-language check format (topic_format.py). Modes (TOPIC a topic
name; every wait is bounded by a watchdog):

  publish TOPIC N SIZE [START] [SUBSCRIBERS] [TIMEOUT]
        attaches (or creates) TOPIC, waits until it has SUBSCRIBERS subscriptions (default 1;
        0: none), publishes bytes messages seq = START .. START + N - 1 of SIZE bytes (SIZE 0:
        sizes cycle through 16, 200, 5000 and 300 000, inline and not), each with TIMEOUT
        (default: the watchdog; 0: fails at once with Full if it would wait), prints "ok N"
  publish-arrays TOPIC N ROWS COLS [START] [SUBSCRIBERS] [empty]
        the same with array messages; "empty": each built with hakobu.empty (no copy)
  publish-forever TOPIC ROWS COLS START
        publishes array messages START, START + 1, ... without waiting for subscribers,
        printing "publishing" after the first; runs until killed
  subscribe TOPIC N [ON_FULL] [HISTORY] [SLEEP]
        subscribes (history: an int or "all"), prints "subscribed", receives N messages
        (sleeping SLEEP seconds after each), checks each, prints one line of JSON:
        {"seqs", "topic_seqs", "missed", "dropped", "writeable"}
  hold TOPIC ON_FULL
        subscribes, prints "subscribed", reads a line from stdin, then receives until the
        topic ends and prints the JSON above
  until TOPIC LAST ON_FULL
        subscribes, prints "subscribed", receives until a message with seq >= LAST, checking
        each (whole, in increasing order), prints the JSON above
  iterate TOPIC
        subscribes, prints "subscribed", iterates (`for msg in sub`) until the iteration ends,
        prints the JSON above
  interrupt TOPIC
        subscribes, prints "waiting", blocks in get() without a limit; on Ctrl-C prints
        "interrupted" and exits with 3
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

from topic_format import bytes_message, check, fill_array

import hakobu

signal.alarm(300)  # a forgotten peer ends

WATCHDOG = 60.0
SIZES = (16, 200, 5000, 300_000)


def wait_for_subscribers(topic: hakobu.Topic, count: int) -> None:
    deadline = time.monotonic() + WATCHDOG
    while topic.subscribers < count:
        if time.monotonic() > deadline:
            sys.exit(f"only {topic.subscribers} of {count} subscribers came")
        time.sleep(0.002)


def report(subscriber: hakobu.Subscriber, seqs: list[int], topic_seqs: list[int], missed: list[int]) -> None:
    print(
        json.dumps(
            {
                "seqs": seqs,
                "topic_seqs": topic_seqs,
                "missed": missed,
                "dropped": subscriber.dropped,
                "writeable": writeable,
            }
        ),
        flush=True,
    )


writeable: list[bool] = []


def receive(
    subscriber: hakobu.Subscriber, message: Any, seqs: list[int], topic_seqs: list[int], missed: list[int]
) -> int:
    seq = check(message)
    if hasattr(message, "flags"):
        writeable.append(bool(message.flags.writeable))
    seqs.append(seq)
    topic_seqs.append(subscriber.sequence)
    missed.append(subscriber.missed)
    return seq


def subscribe(topic: hakobu.Topic, on_full: str, history: str = "0") -> hakobu.Subscriber:
    kept: bool | int = True if history == "all" else int(history)
    return topic.subscribe(history=kept, on_full=on_full)


def main(mode: str, name: str, *args: str) -> None:
    topic = hakobu.Topic(name, history=8, capacity=64)
    seqs: list[int] = []
    topic_seqs: list[int] = []
    missed: list[int] = []
    if mode == "publish":
        n, size = int(args[0]), int(args[1])
        start = int(args[2]) if len(args) > 2 else 0
        wait_for_subscribers(topic, int(args[3]) if len(args) > 3 else 1)
        timeout = float(args[4]) if len(args) > 4 else WATCHDOG
        for k in range(n):
            topic.publish(bytes_message(start + k, size or SIZES[k % len(SIZES)]), timeout=timeout)
        print("ok", n, flush=True)
    elif mode == "publish-arrays":
        n, rows, cols = int(args[0]), int(args[1]), int(args[2])
        start = int(args[3]) if len(args) > 3 else 0
        wait_for_subscribers(topic, int(args[4]) if len(args) > 4 else 1)
        shared = len(args) > 5 and args[5] == "empty"
        for k in range(n):
            out = hakobu.empty((rows, cols)) if shared else None
            array = (
                fill_array(out, start + k) if out is not None else fill_array(_plain(rows, cols), start + k)
            )
            topic.publish(array, timeout=WATCHDOG)
        print("ok", n, flush=True)
    elif mode == "publish-forever":
        rows, cols, seq = int(args[0]), int(args[1]), int(args[2])
        array = _plain(rows, cols)
        while True:
            topic.publish(fill_array(array, seq), timeout=WATCHDOG)
            if seq == int(args[2]):
                print("publishing", flush=True)
            seq += 1
    elif mode == "subscribe":
        n = int(args[0])
        on_full = args[1] if len(args) > 1 else "block"
        pause = float(args[3]) if len(args) > 3 else 0.0
        with subscribe(topic, on_full, args[2] if len(args) > 2 else "0") as sub:
            print("subscribed", flush=True)
            for _ in range(n):
                receive(sub, sub.get(timeout=WATCHDOG), seqs, topic_seqs, missed)
                if pause:
                    time.sleep(pause)
            report(sub, seqs, topic_seqs, missed)
    elif mode == "hold":
        with subscribe(topic, args[0]) as sub:
            print("subscribed", flush=True)
            sys.stdin.readline()
            for message in sub:
                receive(sub, message, seqs, topic_seqs, missed)
            report(sub, seqs, topic_seqs, missed)
    elif mode == "until":
        last = int(args[0])
        with subscribe(topic, args[1]) as sub:
            print("subscribed", flush=True)
            while not seqs or seqs[-1] < last:
                seq = receive(sub, sub.get(timeout=WATCHDOG), seqs, topic_seqs, missed)
                assert len(seqs) == 1 or seq > seqs[-2], f"message {seq} after {seqs[-2]}"
            report(sub, seqs, topic_seqs, missed)
    elif mode == "iterate":
        with topic.subscribe(on_full="block") as sub:
            print("subscribed", flush=True)
            for message in sub:
                receive(sub, message, seqs, topic_seqs, missed)
            report(sub, seqs, topic_seqs, missed)
    elif mode == "interrupt":
        with topic.subscribe() as sub:
            print("waiting", flush=True)
            try:
                sub.get()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(3)
    else:
        sys.exit(f"unknown mode {mode}")
    topic.close()


def _plain(rows: int, cols: int) -> Any:
    import numpy as np

    return np.empty((rows, cols))


if __name__ == "__main__":
    main(*sys.argv[1:])
