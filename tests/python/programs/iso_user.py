"""Becomes another Unix user after the imports are done.

The test machine's interpreter may live where only root can read (a home
directory of mode 0700), so a program for another user starts as root, imports
what it needs, then drops to that user for good before touching anything of hakobu.
"""

import os
import pwd


def become(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    assert os.geteuid() == entry.pw_uid
