"""A separately started user of a hakobu.Store (tests/python/test_store.py).

Modes (STORE a store name; every wait is bounded by a 60 s watchdog):
  publish STORE N           publishes "X" (float64 arange(N) reshaped to (N // 4, 4)) and "meta"
                            (a dict holding a 100 000-element int64 array); prints "published V"
  read STORE                waits for "X" and "meta"; prints one line of JSON: their checksums,
                            shapes, dtypes, writeable flags and the type of X's base
  hold STORE KEY            reads KEY; prints "held SUM", reads a line from stdin,
                            prints "still SUM" (the sum of the same view, after whatever happened)
  churn STORE KEY MIB       publishes KEY again and again, each version MIB MiB of one byte value
                            (1, 2, ...), printing "version K" after each; runs until killed
  wait STORE KEY            waits without a limit for KEY; prints its repr
  interrupt STORE KEY       prints "waiting", waits without a limit for KEY; on Ctrl-C prints
                            "interrupted" and exits with 3
  put-ints STORE KEY R C    publishes an int32 (R, C) array, Fortran order, [i, j] = i * C + j
"""

from __future__ import annotations

import json
import signal
import sys

import numpy as np

import hakobu

signal.alarm(300)  # a forgotten peer ends


def main(mode: str, name: str, *args: str) -> None:
    store = hakobu.Store(name)
    if mode == "publish":
        n = int(args[0])
        version = store.put("X", np.arange(n, dtype=np.float64).reshape(n // 4, 4))
        store["meta"] = {"n": n, "columns": ["a", "b", "c", "d"], "ids": np.arange(100_000, dtype=np.int64)}
        print("published", version, flush=True)
    elif mode == "read":
        x = store.wait("X", timeout=60)
        meta = store.wait("meta", timeout=60)
        ids = meta["ids"]
        print(
            json.dumps(
                {
                    "x_sum": float(x.sum()),
                    "x_shape": list(x.shape),
                    "x_dtype": str(x.dtype),
                    "x_writeable": bool(x.flags.writeable),
                    "x_base": type(x.base).__name__,
                    "n": meta["n"],
                    "columns": meta["columns"],
                    "ids_sum": int(ids.sum()),
                    "ids_writeable": bool(ids.flags.writeable),
                }
            ),
            flush=True,
        )
    elif mode == "hold":
        value = store[args[0]]
        print("held", int(value.sum()), flush=True)
        sys.stdin.readline()
        print("still", int(value.sum()), flush=True)
    elif mode == "churn":
        size = int(args[1]) << 20
        k = 0
        while True:
            k = k % 250 + 1
            store.put(args[0], np.full(size, k, dtype=np.uint8))
            print("version", k, flush=True)
    elif mode == "wait":
        print(repr(store.wait(args[0])), flush=True)
    elif mode == "interrupt":
        print("waiting", flush=True)
        try:
            store.wait(args[0])
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise SystemExit(3) from None
    elif mode == "put-ints":
        rows, cols = int(args[1]), int(args[2])
        values = np.asfortranarray(np.arange(rows * cols, dtype=np.int32).reshape(rows, cols))
        store[args[0]] = values
        print("published", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(*sys.argv[1:])
