"""Receives COUNT arrays on queue argv[1] and hands each to JAX with from_dlpack;
prints, per array: whether the values match, whether writes through the received
NumPy array are seen by JAX (the memory is shared), and whether JAX still reads
them once the NumPy array is gone (JAX keeps the message alive)."""

import gc
import sys

import jax.numpy as jnp
import numpy as np

import hakobu

queue, count = hakobu.Queue(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    received = queue.get(timeout=60)
    expected = np.arange(received.size, dtype=received.dtype).reshape(received.shape)
    taken = jnp.from_dlpack(received)
    equal = bool(np.array_equal(np.asarray(taken), expected))
    received.flat[0] = 42
    shared = float(taken.ravel()[0]) == 42.0
    del received
    gc.collect()
    kept = float(jnp.sum(taken.ravel()[1:4])) == 6.0
    print(f"{taken.dtype} {taken.shape} equal={equal} shared={shared} kept={kept}", flush=True)
