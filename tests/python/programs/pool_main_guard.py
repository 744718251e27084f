"""A script with a main guard whose functions and classes use module state that cannot be
pickled (locks): the workers find them by reference, running this script as __mp_main__ (its
guarded block does not run there), as multiprocessing's spawn does. What they cannot find by
reference (a lambda, a function defined under the guard) still travels by value.

    pool_main_guard.py     prints one line per check; the test compares them
"""

import os
import sys
import threading

import hakobu

LOCK = threading.Lock()  # module state no pickle can carry
SCALE = 3


def locked_square(x: int) -> int:
    with LOCK:
        return x * x


def where(_: object = None) -> str:
    """The module this function runs in, and whether that is another process."""
    return f"{__name__} {'worker' if os.getpid() != PARENT else 'parent'}"


class Counter:
    """A class holding a lock, as a class attribute."""

    lock = threading.Lock()

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scaled(self, x: int) -> int:
        with self.lock:
            return x * self.factor * SCALE

    @staticmethod
    def negated(x: int) -> int:
        with Counter.lock:
            return -x

    def __repr__(self) -> str:
        return f"Counter({self.factor})"


def make_counter(factor: int) -> Counter:
    return Counter(factor)


PARENT = int(os.environ.get("POOL_MAIN_GUARD_PARENT", os.getpid()))
os.environ["POOL_MAIN_GUARD_PARENT"] = str(PARENT)  # the workers inherit it: they know the parent

if __name__ == "__main__":
    defined_under_the_guard = 1000

    def shifted(x: int) -> int:  # exists only in the parent: travels by value
        return x + defined_under_the_guard

    with hakobu.Pool(2) as pool:
        print("locked", pool.map(locked_square, range(5)), flush=True)
        print("method", pool.map(Counter(2).scaled, range(4)), flush=True)
        print("static", pool.map(Counter.negated, [1, 2]), flush=True)
        print("where", pool.apply(where), flush=True)
        back = pool.apply(make_counter, (7,))
        print("class back", back, isinstance(back, Counter), flush=True)
        print("lambda", pool.map(lambda x: x * SCALE, [1, 2]), flush=True)
        print("under the guard", pool.map(shifted, [1, 2]), flush=True)
        print("argv", pool.apply(eval, ("__import__('sys').argv[1:]",)), flush=True)
    with hakobu.Executor(1) as executor:
        print("executor", executor.submit(locked_square, 9).result(), flush=True)
    sys.exit(0)
