"""Code run the way a notebook runs it: cells exec'd in __main__, from no file. The script
itself has a main guard, so the workers could run it, but the cells' names are not in it:
they travel by value (cloudpickle), as everything of a notebook does.

    pool_notebook.py     prints one line per check; the test compares them
"""

import sys

import hakobu  # noqa: F401 - the cell uses it, as a notebook's earlier cell would have imported it

CELL = """
import dataclasses

@dataclasses.dataclass
class Reading:
    value: float

def doubled(reading):
    return Reading(reading.value * 2)

factor = 10
with hakobu.Pool(2) as pool:
    print("cell class", pool.map(doubled, [Reading(1.0), Reading(2.5)]), flush=True)
    print("cell lambda", pool.map(lambda x: x * factor, [1, 2]), flush=True)
"""

if __name__ == "__main__":
    exec(compile(CELL, "<cell 1>", "exec"), vars(sys.modules["__main__"]))
