"""hakobu: move NumPy arrays, buffers and Python objects between processes at memory speed.

>>> import hakobu, numpy as np
>>> q = hakobu.Queue("frames")          # any process opens it by name
>>> q.put(np.zeros((480, 640)))         # one copy into shared memory
>>> frame = q.get()                     # a writable view of shared memory
>>> with hakobu.Pool() as pool:         # multiprocessing.Pool, data through shared memory
...     sums = pool.map(np.sum, [frame] * 8)
"""

from __future__ import annotations

from . import _checks, _core
from ._arrays import array, empty, empty_like, full, is_shared, zeros, zeros_like
from ._bridge import Bridge
from ._errors import (
    AccessDenied,
    AlreadyExists,
    BridgeError,
    BridgeInputWarning,
    BrokenBarrierError,
    BrokenPool,
    Busy,
    Closed,
    Corrupt,
    Empty,
    EncodingError,
    EndOfStream,
    ForkedHandle,
    Full,
    HakobuError,
    Incompatible,
    InvalidArgument,
    InvalidName,
    KeyNotFound,
    NoSenderWarning,
    NotCreator,
    NotFound,
    NotHeld,
    OutOfSharedMemory,
    OwnerDied,
    PeerTimeout,
    PoolTerminated,
    RemoteError,
    RemoteTraceback,
    SendersLost,
    SystemFailure,
    TooLarge,
    TooManyProcesses,
    TooManyReleases,
    TooManySubscribers,
    Unlinked,
    UnpicklingRefused,
    WorkerLost,
)
from ._pipeline.outputs import SKIP
from ._pipeline.pipeline import Pipeline, Stage
from ._pipeline.serve import serve
from ._queue import Queue
from ._store import Store
from ._sync import Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Value
from ._topic import Subscriber, Topic
from .pool import Executor, Pool

__version__ = _core.__version__


def remove(name: str, domain: str | None = None) -> None:
    """Removes the queue ``name`` whoever created it (what ``hakobu rm`` does).

    Raises NotFound if there is no such queue, InvalidName for a name that no queue can have.
    """
    _core.remove(_checks.name(name, "queue"), _checks.domain(domain))


def default_domain() -> str:
    """The domain used when none is given: $HAKOBU_DOMAIN, else u<uid>."""
    return _core.default_domain()


__all__ = [
    "SKIP",
    "AccessDenied",
    "AlreadyExists",
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Bridge",
    "BridgeError",
    "BridgeInputWarning",
    "BrokenBarrierError",
    "BrokenPool",
    "Busy",
    "Closed",
    "Condition",
    "Corrupt",
    "Empty",
    "EncodingError",
    "EndOfStream",
    "Event",
    "Executor",
    "ForkedHandle",
    "Full",
    "HakobuError",
    "Incompatible",
    "InvalidArgument",
    "InvalidName",
    "KeyNotFound",
    "Lock",
    "NoSenderWarning",
    "NotCreator",
    "NotFound",
    "NotHeld",
    "OutOfSharedMemory",
    "OwnerDied",
    "PeerTimeout",
    "Pipeline",
    "Pool",
    "PoolTerminated",
    "Queue",
    "RLock",
    "RemoteError",
    "RemoteTraceback",
    "Semaphore",
    "SendersLost",
    "Stage",
    "Store",
    "Subscriber",
    "SystemFailure",
    "TooLarge",
    "TooManyProcesses",
    "TooManyReleases",
    "TooManySubscribers",
    "Topic",
    "Unlinked",
    "UnpicklingRefused",
    "Value",
    "WorkerLost",
    "array",
    "default_domain",
    "empty",
    "empty_like",
    "full",
    "is_shared",
    "remove",
    "serve",
    "zeros",
    "zeros_like",
]
