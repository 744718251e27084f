"""Receives arrays on queue argv[1] (in its own domain, from $HAKOBU_DOMAIN), hands
them to JAX with from_dlpack, removes the queue and ends while JAX still holds
them: the interpreter never frees those arrays, nor the messages under them."""

import sys

import jax.numpy as jnp
import numpy as np

import hakobu

queue = hakobu.Queue(sys.argv[1], create=True)
queue.put(np.arange(100_000, dtype=np.float32))  # a heap block
queue.put(np.arange(8, dtype=np.float32))  # inline in the slot
queue.put(hakobu.array(np.arange(5_000, dtype=np.float64)))  # by reference: an attachment
big, small, referenced = queue.get(), queue.get(), queue.get()
held = [jnp.from_dlpack(big), jnp.from_dlpack(small), jnp.from_dlpack(referenced)]
big[0] = 7.0
print("shared" if float(held[0][0]) == 7.0 else "copied", flush=True)
queue.unlink()
queue.close()
# The program ends here, holding `held` (and through it `big` and `referenced`).
