"""A hakobu:// listener in its own process: prints its address, then serves each connection.

argv[1] is what it does with a connection:
- ``echo``: sends every message back until the peer closes;
- ``big``: sends one message holding a 64 MiB array (values 0..255 repeating), then echoes;
- ``silent``: reads and never answers (the peer waits in read, for a kill of this process);
- ``idle``: never reads (the peer's writes fill the queue, for a kill of this process).
Stops after the first connection ends, or when stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import numpy as np
from distributed.comm import CommClosedError, listen
from distributed.comm.core import Comm


async def main(mode: str) -> None:
    done = asyncio.Event()

    async def serve(comm: Comm) -> None:
        try:
            if mode == "big":
                await comm.write({"array": (np.arange(64 << 20) % 256).astype(np.uint8)})
            if mode == "idle":
                await asyncio.sleep(120)  # never reads: the peer's writes fill the queue
            while True:
                message = await comm.read()
                if mode != "silent":
                    await comm.write(message)
        except CommClosedError:
            pass
        finally:
            await comm.close()
            done.set()

    async with listen("hakobu://127.0.0.1:0", serve) as listener:
        print(listener.contact_address, flush=True)
        # The test closing stdin (or dying) stops this program too; a daemon thread watches.
        loop = asyncio.get_running_loop()

        def watch_stdin() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        await asyncio.wait_for(done.wait(), timeout=120)
    print("stopped", flush=True)


asyncio.run(main(sys.argv[1]))
