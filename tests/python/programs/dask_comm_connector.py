"""Connects to the hakobu:// address argv[1] from its own process and writes argv[2] messages
of one int each, then reads their echoes and closes; ``hold`` as argv[3] reads and waits
instead (for a kill of this process while the listener reads)."""

from __future__ import annotations

import asyncio
import sys

from distributed.comm import connect


async def main(address: str, count: int, hold: bool) -> None:
    comm = await connect(address, timeout=30)
    print("connected", comm.local_address, flush=True)
    if hold:
        await comm.write({"hello": 1})
        await asyncio.sleep(120)
    for index in range(count):
        await comm.write({"n": index})
    for index in range(count):
        assert (await comm.read()) == {"n": index}
    await comm.close()
    print("done", flush=True)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "hold"))
