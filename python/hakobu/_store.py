"""hakobu.Store: named, immutable values that any process reads without a copy."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any, Optional, cast

from . import _checks, _codec, _core, _errors


def _key(key: object) -> str:
    """``key`` if it is a str (the core checks its length); else InvalidArgument."""
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str(key)  # a str subclass: its text
    raise _errors.InvalidArgument(f"a store key is a str, got {key!r}")


class _Publisher:
    """What the codec writes a value to: the sending methods of a queue
    (``_codec.put_object``), publishing under one key instead. Keeps the version."""

    __slots__ = ("_core", "_key", "_replace", "version")

    def __init__(self, core: _core.Store, key: str, replace: bool) -> None:
        self._core = core
        self._key = key
        self._replace = replace
        self.version = 0

    def put_object(self, obj: Any, timeout: Optional[float]) -> bool:
        version = self._core.put_object(self._key, obj, self._replace)
        if version is None:
            return False
        self.version = version
        return True

    def put_bytes(self, data: Any, kind: int, timeout: Optional[float]) -> None:
        self.version = self._core.put_bytes(self._key, data, kind, self._replace)

    def put_pickle(self, stream: bytes, timeout: Optional[float]) -> None:
        # The codec's object format without out-of-band buffers: its header, then the stream.
        header = _codec._OBJECT_HEADER.pack(_codec._OBJECT_MAGIC, 0)
        loan = self._core.loan(len(header) + len(stream), _codec.KIND_OBJECT, 0)
        payload = memoryview(loan)
        payload[: len(header)] = header
        payload[len(header) :] = stream
        payload.release()
        self.put_loan(loan, timeout)

    def put_loan(self, loan: _core.Loan, timeout: Optional[float]) -> None:
        self.version = self._core.put_loan(self._key, loan, self._replace)

    def loan(self, nbytes: int, kind: int, attachments: int) -> _core.Loan:
        return self._core.loan(nbytes, kind, attachments)

    def loan_array(
        self, code: int, bits: int, lanes: int, typestr: str, shape: list[int], fortran_order: bool
    ) -> _core.Loan:
        return self._core.loan_array(code, bits, lanes, typestr, shape, fortran_order)

    def loan_array_ref(
        self,
        code: int,
        bits: int,
        lanes: int,
        typestr: str,
        shape: list[int],
        strides: list[int],
        byte_offset: int,
    ) -> _core.Loan:
        return self._core.loan_array_ref(code, bits, lanes, typestr, shape, strides, byte_offset)


class Store(MutableMapping[str, Any]):
    """A named store of immutable values, read by any process without a copy.

    Any process of the same user opens the store by ``name`` (``create``: None,
    the default, creates it or attaches to it; True requires creating it, False
    requires it to exist). ``capacity`` (keys, rounded up to a power of two)
    applies when creating. The store stays until ``unlink()`` (or ``hakobu rm``),
    whoever created it and whatever happened to them.

    Values are published whole and never change: ``store[key] = value`` (or
    ``put``) publishes a new version, which later lookups in every process see,
    while views of the old one stay valid and unchanged; a version's memory
    goes back to the heap once it is replaced or deleted and its last view is
    gone, in whatever process. A publisher killed at any point leaves the old
    value or the new one, never a torn one.

    * NumPy arrays (any dtype, shape and order) are copied once into shared
      memory, or not at all when they already live there (``hakobu.empty``,
      ``zeros`` & co.: their memory is published as it is, so the publisher
      must not write it afterwards). Lookups return read-only views of it
      (``writeable`` False) whose ``base`` holds the version.
    * ``bytes``, ``bytearray`` and ``memoryview`` are copied once and read back
      as ``bytes`` (a copy, as Queue.get returns them: a value of bytes reads as
      the type it was published as; large binary data belongs in a ``uint8``
      array, which reads without a copy).
    * Any other object is pickled as Queue.put does: arrays inside it travel
      out of band and read back as read-only views. It is unpickled at every
      lookup, so each lookup returns a new object. ``allow_pickle=False``
      restricts what lookups unpickle as for a queue (hakobu.UnpicklingRefused).

    Keys are ``str`` of 1 to 224 UTF-8 bytes; any other key raises
    InvalidArgument (a ValueError). A missing key raises hakobu.KeyNotFound, a
    KeyError. ``len``, iteration and ``keys()`` see a snapshot of the keys.
    """

    def __init__(
        self,
        name: str,
        capacity: int = 1024,
        *,
        create: Optional[bool] = None,
        domain: Optional[str] = None,
        allow_pickle: bool = True,
    ) -> None:
        _checks.name(name, "store")
        if create is not None:
            _checks.flag(create, "create")
        self._allow_pickle = _checks.flag(allow_pickle, "allow_pickle")
        resolved = _checks.domain(domain)
        # capacity: the bindings check the type, the core the range.
        self._core = _core.Store(name, create, capacity, resolved)
        self._name = name
        self._capacity: int = self._core.capacity  # kept: a closed handle has none
        self._domain = resolved or _core.default_domain()

    # --- publishing ----------------------------------------------------------------
    def put(self, key: str, value: Any, *, replace: bool = True) -> int:
        """Publishes ``value`` under ``key`` and returns its version (store-wide, increasing).

        With ``replace=False`` a key that has a value raises AlreadyExists and
        keeps it. Raises OutOfSharedMemory (with the sizes) when shared memory
        cannot hold the value, Full when every key of the store is taken; on
        any error the store is left as it was.
        """
        publisher = _Publisher(self._core, _key(key), _checks.flag(replace, "replace"))
        # The codec writes to a queue's sending methods, which _Publisher has (its first
        # try, put_object, publishes bytes and numeric arrays in one call).
        _codec.put_object(cast(_core.Queue, publisher), value, None)
        return publisher.version

    def __setitem__(self, key: str, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: str) -> None:
        """Removes the key's value (KeyNotFound if it has none); views of it stay valid."""
        self._core.erase(_key(key))

    # --- reading -----------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._decoded(self._core.get_object(_key(key)))

    def wait(self, key: str, timeout: Optional[float] = None) -> Any:
        """The value of ``key`` once it has one: now, or when some process publishes it.

        Waits at most ``timeout`` seconds (None: no limit) and raises
        KeyNotFound if the key still has no value then, as a lookup does
        (as Queue.get raises Empty after a timeout). Raises Closed when the
        handle is closed or the store unlinked meanwhile; Ctrl-C interrupts it.
        """
        return self._decoded(self._core.wait_object(_key(key), _checks.timeout(timeout)))

    def __contains__(self, key: object) -> bool:
        return self._core.contains(_key(key))  # no decoding: a lookup and a reference

    def __iter__(self) -> Iterator[str]:
        return iter(self._core.keys())

    def __len__(self) -> int:
        return len(self._core.keys())

    def items(self) -> ItemsView[str, Any]:
        """(key, value) pairs of the keys that have a value; a key deleted meanwhile is skipped."""
        return _Items(self)

    def values(self) -> ValuesView[Any]:
        """The values of the keys that have a value; a key deleted meanwhile is skipped."""
        return _Values(self)

    def _decoded(self, obj: Any) -> Any:
        if type(obj) is _core.StoreValue:
            # The codec reads what a queue message and a store value both have (kind,
            # array_layout, attachments, the buffer): read-only buffers give read-only arrays.
            return _codec.decode(cast(_core.Message, obj), self._allow_pickle)
        return obj

    # --- state ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def domain(self) -> str:
        """The domain the store lives in."""
        return self._domain

    @property
    def capacity(self) -> int:
        """Keys the store can hold."""
        return self._capacity

    @property
    def allow_pickle(self) -> bool:
        """Whether values read may be any pickle (see the class's docstring)."""
        return self._allow_pickle

    def close(self) -> None:
        """Lets go of the store in this process; the store, its values and views of them stay."""
        self._core.close()

    def unlink(self) -> None:
        """Removes the store's name (any handle may); its values go back to the heap when
        the last handle on the store and the last view of each value are gone."""
        self._core.unlink()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._core.is_open:
            return f"hakobu.Store({self.name!r}, closed)"
        return (
            f"hakobu.Store({self.name!r}, domain={self.domain!r}, capacity={self.capacity}, keys={len(self)})"
        )

    def __reduce__(self) -> Any:
        # Another process attaches to the same store (the resolved domain: its default may differ).
        return (_reopen, (self.name, self.capacity, self.domain, self._allow_pickle))


def _reopen(name: str, capacity: int, domain: str, allow_pickle: bool) -> Store:
    """Unpickles a Store: attaches to the store it was (NotFound if it was removed since)."""
    return Store(name, capacity, create=False, domain=domain, allow_pickle=allow_pickle)


class _Items(ItemsView[str, Any]):
    _mapping: Store

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for key in self._mapping:
            try:
                yield key, self._mapping[key]
            except _errors.KeyNotFound:
                continue


class _Values(ValuesView[Any]):
    _mapping: Store

    def __iter__(self) -> Iterator[Any]:
        for key in self._mapping:
            try:
                yield self._mapping[key]
            except _errors.KeyNotFound:
                continue
