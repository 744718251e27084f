"""Receives one array from queue argv[1], says so, and holds it until killed."""

import sys
import time

import hakobu

queue = hakobu.Queue(sys.argv[1])
array = queue.get(timeout=60)
print("holding", array.nbytes, flush=True)
time.sleep(600)
