"""
hakobu's C++ core: named shared-memory queues and topics (use the hakobu package, not this module)
"""

from collections.abc import Sequence
import types
from typing import Any


__version__: str

def bind_errors(errors: types.ModuleType) -> None:
    """
    Keeps the exception class of every C++ error kind, looked up once in `errors` (hakobu._errors calls it); ImportError if one is missing
    """

def error_table() -> list[tuple[str, str, type[Exception] | None]]:
    """
    (error enum, value, exception class) for every value of every C++ error enum the core raises
    """

class Message:
    """
    A received message; its bytes are shared memory, exported through the buffer protocol
    """

    def __buffer__(self, flags: int, /) -> memoryview:
        """The bytes, writable, through the buffer protocol"""

    @property
    def kind(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def in_shared_memory(self) -> bool: ...

    def array_layout(self) -> tuple[int, int, int, str, list[int], list[int], int, int] | None:
        """
        (code, bits, lanes, typestr, shape, strides, data_offset, data_attachment) of an array message, else None
        """

    @property
    def address(self) -> int: ...

    @property
    def attachment_count(self) -> int: ...

    def attachment(self, index: int) -> Attachment:
        """Attachment `index` (shared memory the message holds)"""

class Attachment:
    """
    Shared memory a received message holds (e.g. the elements of an array sent by reference)
    """

    def __buffer__(self, flags: int, /) -> memoryview:
        """The bytes, writable, through the buffer protocol"""

    @property
    def nbytes(self) -> int: ...

    @property
    def address(self) -> int: ...

    @property
    def index(self) -> int: ...

class Loan:
    """Shared memory being written, sent without a copy"""

    def __buffer__(self, flags: int, /) -> memoryview:
        """The bytes, writable, through the buffer protocol"""

    @property
    def nbytes(self) -> int: ...

    @property
    def data_offset(self) -> int: ...

    @property
    def address(self) -> int: ...

    def attach(self, source: object) -> bool:
        """
        Attaches a Loan, Message or Attachment; False if it cannot be (then copy instead)
        """

class Queue:
    """A named shared-memory queue (use hakobu.Queue)"""

    def __init__(self, name: str, create: bool | None, capacity: object | None, inline_capacity: object | None, domain: str, spin: float, max_bytes: object | None = None, sends: bool = False) -> None:
        """
        capacity, inline_capacity and max_bytes (None: half of /dev/shm, 0: no limit): ints (anything else is an InvalidArgument); spin in seconds; sends: count as a sender from now on
        """

    def put_bytes(self, data: object, kind: int, timeout: float | None) -> None: ...

    def loan_array(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], fortran_order: bool) -> Loan: ...

    def loan(self, nbytes: object | None, kind: int, attachments: object | None) -> Loan:
        """Shared memory for a message of `nbytes` with room for `attachments`"""

    def loan_array_ref(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], strides: Sequence[int], byte_offset: int) -> Loan: ...

    def put_loan(self, loan: Loan, timeout: float | None) -> None: ...

    def put_object(self, obj: object | None, timeout: float | None) -> bool:
        """
        Sends bytes, an array of a built-in numeric type or an object whose pickle has no large buffer in one call; False when the Python codec must send `obj`
        """

    def put_pickle(self, stream: object, timeout: float | None) -> None:
        """Sends a pickle without out-of-band buffers as an object message"""

    def get_object(self, timeout: float | None, allow_pickle: bool) -> object:
        """
        Receives and decodes a message in one call; a Message when the Python codec must decode it
        """

    def get(self, timeout: float | None) -> Message: ...

    def qsize(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

    @property
    def is_creator(self) -> bool: ...

    @property
    def is_open(self) -> bool: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self, failed: bool = False) -> None:
        """
        Lets go of the queue; a sender's part of the stream ends (failed: as a failure)
        """

    def unlink(self) -> None: ...

    def set_latency(self, mode: str, spin: float) -> None:
        """
        How blocking calls wait: 'adaptive', 'spin', 'sleep', or 'fixed' (spin `spin` seconds, then sleep)
        """

    @property
    def latency(self) -> str: ...

    @property
    def planned_spin(self) -> int:
        """
        Nanoseconds the next blocking get would spin before its budget (a snapshot)
        """

    def spin_until_ready(self, writable: bool, at_most: float) -> bool:
        """
        Spins as a blocking call would (at most `at_most` seconds, without the GIL) until the queue looks ready; never sleeps, takes nothing
        """

    def watch(self, socket: WakeSocket, writable: bool, cookie: int) -> bool:
        """
        Puts (gets, if writable) signal `socket` with `cookie` until unwatch; False if the table is full
        """

    def unwatch(self, socket: WakeSocket, writable: bool, cookie: int) -> None: ...

class WakeSocket:
    """
    A descriptor that becomes readable when a watched queue may be ready (for event loops)
    """

    def __init__(self) -> None: ...

    def fileno(self) -> int: ...

    @property
    def id(self) -> int: ...

    def drain(self) -> list[int]:
        """The cookies of the wake-ups received so far (without waiting)"""

    def close(self) -> None: ...

def remove(name: str, domain: str = '') -> None:
    """Removes a queue by name, whoever created it"""

OUT_OF_BAND_MIN_BYTES: int = 65536

def default_domain() -> str:
    """The domain used when none is given"""

def allocate(nbytes: object | None, domain: str = '') -> Loan:
    """Shared memory of the domain, to build arrays in (hakobu.empty)"""

def file_prefix(domain: str) -> str:
    """The prefix of the names of a domain's files in /dev/shm"""

def domain_stats(name: str = '') -> dict[str, Any]:
    """
    Heap use and attached processes of a domain (attaches to it, creating it if needed)
    """

def collect_garbage(name: str = '') -> int:
    """Reclaims what dead processes held; returns how many were reclaimed"""

class DomainAttachment:
    """
    Keeps this process attached to a domain (creating it if it has no files) until closed
    """

    def __init__(self, name: str = '') -> None: ...

    @property
    def name(self) -> str: ...

    def close(self) -> None:
        """Lets go of the domain (the last process out removes an empty one)"""

    def __enter__(self) -> DomainAttachment: ...

    def __exit__(self, *args: object) -> None: ...

def queue_info(name: str, domain: str = '') -> dict[str, Any]:
    """
    Size, capacity, put/get counts and creator pid of a queue (attaches to it; NotFound if missing)
    """

def sync_info(name: str, domain: str = '') -> dict[str, Any]:
    """
    kind ('lock', 'event'...), and for a lock held/holder_pid/holder_alive/waiters/owner_deaths, for an event set/waiters, of a sync object, read from its file; NotFound if missing, Corrupt if damaged
    """

def store_info(name: str, domain: str = '') -> dict[str, Any]:
    """
    capacity, creator and keys (key, version, size, kind, readers, damaged) of a store, read from its file without taking references; NotFound if missing, Corrupt if damaged
    """

def store_put_bytes(name: str, key: str, data: bytes, domain: str = '') -> int:
    """
    Publishes bytes under a key of a store (created if missing); the version. For tools and tests
    """

def remove_store(name: str, domain: str = '') -> None:
    """
    Removes a store whoever created it (its values go back to the heap when their last reader lets go)
    """

def topic_info(name: str, domain: str = '') -> dict[str, Any]:
    """
    capacity, history, counts, retained messages and subscribers (pid, alive, on_full, state, lag, dropped, received) of a topic, read from its file without taking anything; NotFound if missing, Corrupt if damaged
    """

def validate_name(name: str) -> str:
    """
    Why a queue or domain name is invalid, or an empty string if it is valid
    """

FILE_NAME_PREFIX: str = 'hakobu:'

def parse_file_name(file_name: str) -> tuple[str, str, str] | None:
    """
    (domain, kind, name) of a file name (not a path), kind one of 'registry', 'heap', 'queue', 'new_queue', 'store', 'sync', 'topic', 'other'; None if it is no file of a domain
    """

def domain_files(domain: str) -> list[tuple[str, str, str]]:
    """
    (path, kind, name) of every file of a domain in /dev/shm and on hugetlbfs mounts, found by name; kind one of 'registry', 'heap', 'huge_heap', 'queue', 'new_queue', 'store', 'sync', 'topic', 'other'; named objects first, the registry last
    """

def domain_names() -> list[str]:
    """The names of the domains that have files, sorted"""

def hugetlbfs_mounts() -> list[tuple[str, int]]:
    """(path, page size in bytes) of every hugetlbfs mount, of any page size"""

def shm_directory() -> str:
    """The directory of shared-memory files"""

class StoreValue:
    """
    One version of a stored value; its bytes are shared memory, exported read-only
    """

    def __buffer__(self, flags: int, /) -> memoryview:
        """The bytes, read-only, through the buffer protocol"""

    @property
    def kind(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def version(self) -> int: ...

    @property
    def record_offset(self) -> int:
        """Heap offset of the version's record (tells versions apart)"""

    def array_layout(self) -> tuple[int, int, int, str, list[int], list[int], int, int] | None:
        """
        (code, bits, lanes, typestr, shape, strides, data_offset, data_attachment) of an array value, else None
        """

    @property
    def attachment_count(self) -> int: ...

    def attachment(self, index: int) -> StoreAttachment:
        """Attachment `index` of the value (read-only shared memory)"""

    def attach_to(self, loan: Loan, address: int, nbytes: int) -> tuple[int, int] | None:
        """
        Attaches the block of the value's memory holding [address, address + nbytes) to `loan`, without a copy: (attachment index, offset in it), or None (another domain, or not the value's memory)
        """

class StoreAttachment:
    """Shared memory a stored value holds, exported read-only"""

    def __buffer__(self, flags: int, /) -> memoryview:
        """The bytes, read-only, through the buffer protocol"""

    @property
    def nbytes(self) -> int: ...

    @property
    def index(self) -> int: ...

    def attach_to(self, loan: Loan, address: int, nbytes: int) -> tuple[int, int] | None:
        """As StoreValue.attach_to (the value this attachment belongs to)"""

class Store:
    """A named store of immutable values (use hakobu.Store)"""

    def __init__(self, name: str, create: bool | None, capacity: object | None, domain: str) -> None:
        """
        capacity: an int (anything else is an InvalidArgument); create: None, True or False
        """

    def put_object(self, key: str, obj: object | None, replace: bool) -> int | None:
        """
        Publishes bytes or an array of a built-in numeric type in one call and returns the version; None when the Python codec must encode `obj`
        """

    def put_bytes(self, key: str, data: object, kind: int, replace: bool) -> int: ...

    def put_loan(self, key: str, loan: Loan, replace: bool) -> int:
        """Publishes a loan without a copy (it is consumed); returns the version"""

    def loan(self, nbytes: object | None, kind: int, attachments: object | None) -> Loan:
        """Shared memory for a value of `nbytes` with room for `attachments`"""

    def loan_array(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], fortran_order: bool) -> Loan: ...

    def loan_array_ref(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], strides: Sequence[int], byte_offset: int) -> Loan: ...

    def get_object(self, key: str) -> object:
        """
        The value of `key`: bytes, a read-only array, or the StoreValue for the Python codec
        """

    def wait_object(self, key: str, timeout: float | None) -> object:
        """
        As get_object, once the key has a value (at most `timeout` seconds; None: no limit)
        """

    def value(self, key: str) -> StoreValue:
        """The StoreValue of `key`, not decoded"""

    def contains(self, key: str) -> bool: ...

    def erase(self, key: str) -> None: ...

    def keys(self) -> list[str]:
        """The keys that have a value (a snapshot)"""

    @property
    def capacity(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def is_open(self) -> bool: ...

    def close(self) -> None: ...

    def unlink(self) -> None: ...

class Lock:
    """A named lock between processes (use hakobu.Lock)"""

    def __init__(self, name: str, create: bool | None, domain: str) -> None: ...

    def acquire(self, timeout: float | None) -> int:
        """
        0: not acquired before the timeout; 1: acquired; 2: acquired from a holder that died holding it
        """

    def release(self) -> None: ...

    def info(self) -> dict[str, Any]:
        """
        held, waiters, held_by_this_process, holder_pid, owner_deaths (a snapshot)
        """

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

class Event:
    """A named event between processes (use hakobu.Event)"""

    def __init__(self, name: str, create: bool | None, domain: str) -> None: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None) -> bool:
        """True once the event is set; False if the timeout ran out"""

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

class RLock:
    """A named recursive lock between processes (use hakobu.RLock)"""

    def __init__(self, name: str, create: bool | None, domain: str) -> None: ...

    def acquire(self, timeout: float | None) -> int:
        """as Lock.acquire"""

    def release(self) -> None: ...

    def info(self) -> dict[str, Any]:
        """Lock.info's keys and depth (this thread's recursion count)"""

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

class Semaphore:
    """A named (bounded) semaphore between processes (use hakobu.Semaphore)"""

    def __init__(self, name: str, value: int, bounded: bool, create: bool | None, domain: str) -> None: ...

    def acquire(self, timeout: float | None) -> bool:
        """True once a count is taken"""

    def release(self, n: int) -> None: ...

    def info(self) -> dict[str, Any]:
        """
        value, bound, waiters, held_by_this_process, holders, returned, maybe_leaked (a snapshot)
        """

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

class Barrier:
    """A named barrier between processes (use hakobu.Barrier)"""

    def __init__(self, name: str, parties: int, create: bool | None, domain: str) -> None: ...

    def wait(self, timeout: float | None, interruptible: bool) -> int:
        """
        this party's arrival index; raises BrokenBarrierError. interruptible: called from the main thread
        """

    def abort(self) -> None: ...

    def reset(self) -> None: ...

    @property
    def broken(self) -> bool: ...

    @property
    def parties(self) -> int: ...

    @property
    def n_waiting(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

class Condition:
    """A named condition between processes (use hakobu.Condition)"""

    def __init__(self, name: str, lock: Lock | None, create: bool | None, domain: str) -> None: ...

    def acquire(self, timeout: float | None) -> int:
        """as Lock.acquire"""

    def release(self) -> None: ...

    def wait(self, timeout: float | None) -> tuple[bool, int]:
        """
        (notified, lock outcome as acquire's); the lock is held again on return
        """

    def notify(self, n: int) -> None: ...

    def notify_all(self) -> None: ...

    @property
    def name(self) -> str: ...

    @property
    def lock_name(self) -> str: ...

    @property
    def domain(self) -> str: ...

class SharedArray:
    """
    Named numbers between processes: exports its data bytes (use hakobu.Value, hakobu.Array)
    """

    def __init__(self, name: str, code: int, bits: int, lanes: int, shape: Sequence[int], initial: bytes | None, create: bool | None, domain: str) -> None: ...

    def acquire(self, timeout: float | None) -> int:
        """the array's lock, as Lock.acquire"""

    def release(self) -> None: ...

    def load(self, index: int) -> object: ...

    def store(self, index: int, value: int) -> object: ...

    def fetch_add(self, index: int, delta: int) -> object: ...

    def compare_exchange(self, index: int, expected: int, desired: int) -> object: ...

    @property
    def dtype(self) -> tuple[int, int, int]: ...

    @property
    def shape(self) -> list[int]: ...

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

def remove_sync(name: str, domain: str = '') -> None:
    """
    Removes the sync object `name` (a lock, an event...) whoever created it; NotFound if missing
    """

class Subscriber:
    """One subscription to a topic (use hakobu.Topic.subscribe)"""

    def get_object(self, timeout: float | None, allow_pickle: bool) -> object:
        """
        Receives and decodes the next message in one call (read-only); a Message when the Python codec must decode it
        """

    @property
    def sequence(self) -> int:
        """The topic's position of the last message received"""

    @property
    def missed(self) -> int:
        """Messages skipped just before the last one received (drop_oldest)"""

    @property
    def dropped(self) -> int: ...

    @property
    def lag(self) -> int: ...

    @property
    def received(self) -> int: ...

    @property
    def on_full(self) -> str: ...

    @property
    def is_open(self) -> bool: ...

    def spin_until_ready(self, writable: bool, at_most: float) -> bool:
        """
        Spins as a blocking get would (at most `at_most` seconds, without the GIL) until a message looks published; never sleeps, takes nothing (`writable` must be False)
        """

    def watch(self, socket: WakeSocket, writable: bool, cookie: int) -> bool:
        """
        Publishes signal `socket` with `cookie` until unwatch; False if the table is full
        """

    def unwatch(self, socket: WakeSocket, writable: bool, cookie: int) -> None: ...

    def close(self) -> None:
        """Ends the subscription; waiting gets (other threads) raise Closed"""

class Topic:
    """A named publish/subscribe topic (use hakobu.Topic)"""

    def __init__(self, name: str, create: bool | None, capacity: object | None, history: object | None, max_subscribers: object | None, inline_capacity: object | None, domain: str, spin: float) -> None:
        """Sizes: ints (anything else is an InvalidArgument); spin in seconds"""

    def subscribe(self, history: object | None, on_full: str) -> Subscriber: ...

    def set_latency(self, mode: str, spin: float) -> None:
        """
        How blocking calls of this handle and its subscribers wait (as Queue.set_latency)
        """

    @property
    def latency(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def domain(self) -> str: ...

    @property
    def is_creator(self) -> bool: ...

    @property
    def is_open(self) -> bool: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def unlink(self) -> None: ...

    def put_bytes(self, data: object, kind: int, timeout: float | None) -> None: ...

    def loan_array(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], fortran_order: bool) -> Loan: ...

    def loan(self, nbytes: object | None, kind: int, attachments: object | None) -> Loan:
        """Shared memory for a message of `nbytes` with room for `attachments`"""

    def loan_array_ref(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], strides: Sequence[int], byte_offset: int) -> Loan: ...

    def put_loan(self, loan: Loan, timeout: float | None) -> None: ...

    def put_object(self, obj: object | None, timeout: float | None) -> bool:
        """
        Sends bytes, an array of a built-in numeric type or an object whose pickle has no large buffer in one call; False when the Python codec must send `obj`
        """

    def put_pickle(self, stream: object, timeout: float | None) -> None:
        """Sends a pickle without out-of-band buffers as an object message"""

def remove_topic(name: str, domain: str = '') -> None:
    """Removes a topic by name, whoever created it"""
