"""Run as another user: plants a file in a domain's place and holds its lock.

Arguments: user, path, mode (octal). Creates the file with that mode, takes an
open-file-description write lock on its first bytes (the init lock a domain
or queue takes), prints "ready" and holds on until stdin closes.
"""

import fcntl
import os
import struct
import sys

from iso_user import become

become(sys.argv[1])
path, mode = sys.argv[2], int(sys.argv[3], 8)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
os.fchmod(fd, mode)
os.ftruncate(fd, 1 << 20)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
lock = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 4096, 0)
fcntl.fcntl(fd, F_OFD_SETLK, lock)
print("ready", flush=True)
sys.stdin.read()
