# A script without `if __name__ == "__main__"`: workers must not run it again.
# Its own function, class and lambda travel to the workers by value.
import dataclasses
import sys

import numpy as np

import hakobu

print("script body runs", flush=True)


@dataclasses.dataclass
class Point:
    x: float
    y: float


def norm(point: Point) -> float:
    return float(np.hypot(point.x, point.y))


with hakobu.Pool(2) as pool:
    print("norms", pool.map(norm, [Point(3, 4), Point(6, 8)]), flush=True)
    offset = 100
    print("lambda", pool.map(lambda v: v + offset, [1, 2, 3]), flush=True)
    moved = pool.apply(lambda p: Point(p.x + 1, p.y), (Point(1, 2),))
    print("class back", type(moved).__name__, isinstance(moved, Point), moved, flush=True)
with hakobu.Executor(1) as executor:
    print("executor", executor.submit(norm, Point(5, 12)).result(), flush=True)
# Never shut down: as with concurrent.futures, the work still finishes at exit.
leftover = hakobu.Executor(1)
leftover.submit(print, "work left to an executor finishes at exit", flush=True)
sys.exit(0)
