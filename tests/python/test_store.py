"""hakobu.Store: named, immutable values read without a copy, by this process and by
separately started Python and C++ programs (tests/python/programs/store_peer.py,
tests/cpp/store_peer.cpp)."""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, _names, finish, start, start_with_small_dev_shm

import hakobu
from hakobu import _core

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create mount namespaces")


@pytest.fixture
def store_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh store name; the store is unlinked after the test if it still exists."""
    name = f"st-{request.node.name[:40]}-{next(_names)}"
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    yield name
    gc.collect()
    try:
        hakobu.Store(name, create=False).unlink()
    except hakobu.NotFound:
        pass


def live_bytes() -> int:
    """Bytes of the domain's heap held by anything, after dead processes' holdings are reclaimed."""
    gc.collect()
    _core.collect_garbage(DOMAIN)
    stats: dict[str, Any] = _core.domain_stats(DOMAIN)
    return int(stats["live_bytes"])


def holds_store_value(array: np.ndarray) -> bool:
    """True when a StoreValue is in the array's chain of bases (it keeps the version alive)."""
    base: Any = array
    while base is not None:
        if isinstance(base, (_core.StoreValue, _core.StoreAttachment)):
            return True
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return False


def address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


# --- the mapping --------------------------------------------------------------------------


def test_a_mapping_of_keys_to_values(store_name: str) -> None:
    with hakobu.Store(store_name, capacity=16) as store:
        assert store.name == store_name and store.capacity == 16 and store.domain == DOMAIN
        assert len(store) == 0 and list(store) == [] and "a" not in store
        v1 = store.put("a", 1)
        store["b"] = "two"
        v3 = store.put("a", [1, 2, 3])
        assert v3 > v1, "versions increase with every publish"
        assert store["a"] == [1, 2, 3] and store["b"] == "two"
        assert sorted(store) == ["a", "b"] and sorted(store.keys()) == ["a", "b"] and len(store) == 2
        assert sorted(store.items()) == [("a", [1, 2, 3]), ("b", "two")]
        assert sorted(map(str, store.values())) == ["[1, 2, 3]", "two"]
        assert "a" in store and store.get("missing") is None and store.get("missing", 5) == 5
        with pytest.raises(hakobu.AlreadyExists):
            store.put("a", "new", replace=False)
        assert store["a"] == [1, 2, 3], "a refused put leaves the value"
        store["none"] = None
        assert store["none"] is None and "none" in store
        del store["a"]
        assert "a" not in store
        with pytest.raises(KeyError):
            store["a"]
        with pytest.raises(hakobu.KeyNotFound, match="no value for key 'a'"):
            del store["a"]
        assert store.put("a", "again", replace=False) > v3, "a deleted key takes a value again"
        assert repr(store) == f"hakobu.Store({store_name!r}, domain={DOMAIN!r}, capacity=16, keys=3)"
        again = pickle.loads(pickle.dumps(store))
        assert again["b"] == "two", "a pickled store attaches to the same store"
        again.close()
    assert repr(store) == f"hakobu.Store({store_name!r}, closed)"
    with pytest.raises(hakobu.Closed):
        store["b"]
    with pytest.raises(hakobu.Closed):
        store["b"] = 2


def test_a_full_store_refuses_new_keys_only(store_name: str) -> None:
    store = hakobu.Store(store_name, capacity=2)
    store["one"] = 1
    store["two"] = 2
    with pytest.raises(hakobu.Full, match="2 entries"):
        store["three"] = 3
    store["two"] = 22  # an existing key still takes new versions
    assert dict(store.items()) == {"one": 1, "two": 22}
    store.unlink()


# --- values ---------------------------------------------------------------------------------

ARRAYS = {
    "float64 2-d": np.arange(12.0).reshape(3, 4),
    "int16 Fortran": np.asfortranarray(np.arange(30, dtype=np.int16).reshape(5, 6)),
    "strided view": np.arange(100, dtype=np.int32)[::3],
    "0-d": np.array(7.5),
    "empty": np.zeros((0, 4)),
    "bool": np.array([True, False, True]),
    "complex64": np.arange(4, dtype=np.complex64) * 1j,
    "big-endian": np.arange(6, dtype=">i4"),
    "structured": np.array(
        [(1, 2.5, b"ab"), (3, 4.5, b"cd")], dtype=[("i", "<i4"), ("f", "<f8"), ("s", "S2")]
    ),
    "datetime64": np.array(["2026-01-01", "2026-12-01"], dtype="datetime64[D]"),
    "unicode": np.array(["store", "values"]),
    "large": np.arange(1 << 20, dtype=np.float32),
}


@pytest.mark.parametrize("kind", list(ARRAYS))
def test_arrays_read_as_read_only_views_of_one_copy(store_name: str, kind: str) -> None:
    store = hakobu.Store(store_name)
    original = ARRAYS[kind]
    store["x"] = original
    first, second = store["x"], store["x"]
    assert type(first) is np.ndarray
    assert first.dtype == original.dtype and first.shape == original.shape
    np.testing.assert_array_equal(first, original)
    assert not first.flags.writeable, "values are shared by every reader: read-only"
    with pytest.raises(ValueError):
        first[...] = 0
    assert holds_store_value(first), "the view keeps the value's version alive"
    if first.nbytes:
        assert address(first) == address(second), "lookups are views of the same memory, not copies"
    store.unlink()


def test_hakobu_arrays_are_published_without_a_copy(store_name: str) -> None:
    store = hakobu.Store(store_name)
    shared = hakobu.zeros((256, 256))
    shared[3] = 3.0
    store["z"] = shared
    value = store["z"]
    assert address(value) == address(shared), "the block of hakobu.zeros is the published value"
    assert value[3].sum() == 3.0 * 256 and not value.flags.writeable
    store.unlink()


def test_bytes_read_back_as_bytes(store_name: str) -> None:
    store = hakobu.Store(store_name)
    store["b"] = b"abc"
    store["ba"] = bytearray(b"\x00\x01" * 100_000)
    store["mv"] = memoryview(b"0123456789")[::2]  # not contiguous: copied as its bytes
    store["empty"] = b""
    assert store["b"] == b"abc" and type(store["b"]) is bytes
    assert store["ba"] == b"\x00\x01" * 100_000
    assert store["mv"] == b"02468" and store["empty"] == b""
    store.unlink()


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def test_objects_are_pickled_with_their_arrays_out_of_band(store_name: str) -> None:
    store = hakobu.Store(store_name)
    big = np.arange(200_000, dtype=np.float64)
    store["meta"] = {"columns": ["a", "b"], "n": 3, "big": big, "small": np.arange(3)}
    first, second = store["meta"], store["meta"]
    assert first["columns"] == ["a", "b"] and first["n"] == 3
    np.testing.assert_array_equal(first["big"], big)
    assert not first["big"].flags.writeable, "a large array inside an object is a read-only view"
    assert address(first["big"]) == address(second["big"]), "...of one copy in shared memory"
    assert first is not second, "each lookup unpickles a new object"
    store["point"] = Point(4)
    assert store["point"].x == 4
    plain = hakobu.Store(store_name, allow_pickle=False)
    with pytest.raises(hakobu.UnpicklingRefused):
        plain["point"]
    store["plain"] = {"n": 3, "names": ["a"]}
    assert plain["plain"] == {"n": 3, "names": ["a"]}, "plain data is read with allow_pickle=False"
    plain.close()
    store.unlink()


def test_replacing_or_deleting_keeps_views_and_memory_returns_with_the_last(store_name: str) -> None:
    store = hakobu.Store(store_name)
    store["warm"] = np.zeros(10)  # this process's holdings table, before measuring
    del store["warm"]
    before = live_bytes()
    store["X"] = np.ones(1 << 20)
    old = store["X"]
    store["X"] = np.full(1 << 20, 2.0)
    assert old.sum() == 1 << 20, "a view of the old version is unchanged by a republish"
    assert store["X"].sum() == 2 << 20, "new lookups see the new version"
    del store["X"]
    assert old.sum() == 1 << 20, "...and by a delete"
    assert live_bytes() >= before + (8 << 20), "the old version is still in the heap"
    del old
    assert live_bytes() == before, "the last view returned the version's memory"
    store.unlink()


# --- other processes -------------------------------------------------------------------


def test_a_publisher_and_three_readers_in_other_interpreters(store_name: str) -> None:
    n = 400_000
    readers = [start("store_peer", "read", store_name) for _ in range(3)]  # they wait for the publish
    code, out, err = finish(start("store_peer", "publish", store_name, n))
    assert code == 0, err
    assert out.startswith("published ")
    for reader in readers:
        code, out, err = finish(reader)
        assert code == 0, err
        seen = json.loads(out)
        assert seen["x_sum"] == n * (n - 1) / 2 and seen["x_shape"] == [n // 4, 4]
        assert seen["x_dtype"] == "float64" and not seen["x_writeable"]
        assert seen["n"] == n and seen["columns"] == ["a", "b", "c", "d"]
        assert seen["ids_sum"] == 100_000 * 99_999 // 2 and not seen["ids_writeable"]
    store = hakobu.Store(store_name)
    assert store["X"].sum() == n * (n - 1) / 2, "the store outlived its publisher"
    store.unlink()


def test_a_reader_keeps_its_version_while_the_key_is_republished(store_name: str) -> None:
    store = hakobu.Store(store_name)
    store["X"] = np.full(1 << 20, 3, dtype=np.uint8)
    holder = start("store_peer", "hold", store_name, "X", stdin=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == f"held {3 << 20}\n"
    store["X"] = np.full(1 << 20, 4, dtype=np.uint8)
    del store["X"]
    store["X"] = np.full(1 << 20, 5, dtype=np.uint8)
    holder.stdin.write("go\n")
    holder.stdin.flush()
    code, out, err = finish(holder)
    assert code == 0, err
    assert out == f"still {3 << 20}\n", "the other process's view stayed whole and unchanged"
    assert store["X"][0] == 5
    store.unlink()


def test_a_publisher_killed_mid_publish_leaves_a_whole_value(store_name: str) -> None:
    store = hakobu.Store(store_name)
    churn = start("store_peer", "churn", store_name, "big", 32)
    assert churn.stdout is not None
    for _ in range(3):  # a few versions out: it is in the middle of another copy most of the time
        assert churn.stdout.readline().startswith("version "), churn.stderr
    churn.send_signal(signal.SIGKILL)
    finish(churn)
    value = store["big"]
    assert value.nbytes == 32 << 20
    first = int(value[0])
    assert first in (1, 2, 3, 4) and bool((value == first).all()), "old or new, never torn"
    del value
    store["big"] = b"after"
    assert store["big"] == b"after", "the key takes new versions after its publisher died"
    store.unlink()


def test_wait_returns_a_value_published_later(store_name: str) -> None:
    store = hakobu.Store(store_name)
    waiter = start("store_peer", "wait", store_name, "late")  # waits without a limit
    found: list[Any] = []
    here = threading.Thread(target=lambda: found.append(store.wait("late", timeout=60)))
    here.start()
    code, out, err = finish(start("store_peer", "put-ints", store_name, "late", 2, 3))
    assert code == 0, err
    here.join(120)
    assert not here.is_alive()
    np.testing.assert_array_equal(found[0], np.arange(6, dtype=np.int32).reshape(2, 3))
    code, out, err = finish(waiter)
    assert code == 0, err
    assert out.startswith("array([[0, 1, 2],")
    store.unlink()


def test_wait_times_out_with_key_not_found_and_checks_its_timeout(store_name: str) -> None:
    store = hakobu.Store(store_name)
    with pytest.raises(hakobu.KeyNotFound, match="within the timeout"):
        store.wait("absent", timeout=0.05)
    with pytest.raises(KeyError):
        store.wait("absent", timeout=0)
    store["here"] = 1
    assert store.wait("here", timeout=0) == 1
    assert store.wait("here", timeout=1e300) == 1, "an absurdly long timeout means no limit"
    assert store.wait("here", timeout=math.inf) == 1
    for bad in (math.nan, -1.0, "soon", True):
        with pytest.raises(hakobu.InvalidArgument):
            store.wait("here", timeout=bad)  # type: ignore[arg-type]
    store.unlink()


def test_wait_ends_when_the_store_is_unlinked(store_name: str) -> None:
    store = hakobu.Store(store_name)
    other = hakobu.Store(store_name)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            store.wait("never")
        except BaseException as error:  # noqa: BLE001 (the test looks at it)
            errors.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    other.unlink()
    waiter.join(120)
    assert not waiter.is_alive()
    assert isinstance(errors[0], hakobu.Closed)


def test_ctrl_c_interrupts_a_wait(store_name: str) -> None:
    store = hakobu.Store(store_name)
    waiter = start("store_peer", "interrupt", store_name, "never")
    assert waiter.stdout is not None
    assert waiter.stdout.readline() == "waiting\n"
    time.sleep(0.2)  # let it block (not a measure: any later signal interrupts it too)
    waiter.send_signal(signal.SIGINT)
    code, out, err = finish(waiter)
    assert code == 3, err
    assert out == "interrupted\n"
    store["never"] = 1
    assert store.wait("never", timeout=5) == 1, "the store is as it was"
    store.unlink()


# --- C++ programs ---------------------------------------------------------------------------


def _cpp_peer() -> Path:
    for preset in ("dev", "release", "asan-ubsan"):
        path = REPO / "build" / preset / "tests" / "cpp" / "hakobu_store_peer"
        if path.exists():
            return path
    pytest.skip(
        "build the C++ tests first: cmake --preset dev && cmake --build --preset dev (hakobu_store_peer)"
    )


def test_a_cpp_publisher_and_a_python_reader(store_name: str) -> None:
    peer = _cpp_peer()
    store = hakobu.Store(store_name)
    result = subprocess.run(
        [peer, "put-array", store_name, "X", "300", "7"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    x = store["X"]
    assert x.dtype == np.float64 and x.shape == (300, 7) and not x.flags.writeable
    np.testing.assert_array_equal(x, np.arange(2100, dtype=np.float64).reshape(300, 7))
    store.unlink()


def test_a_python_publisher_and_a_cpp_reader(store_name: str) -> None:
    peer = _cpp_peer()
    store = hakobu.Store(store_name)
    store["ints"] = np.asfortranarray(np.arange(40 * 9, dtype=np.int32).reshape(40, 9))
    store["small"] = np.arange(6, dtype=np.int32).reshape(2, 3)
    for key, shape in (("ints", ("40", "9")), ("small", ("2", "3"))):
        result = subprocess.run(
            [peer, "expect-array", store_name, key, *shape], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (key, result.stderr)
    result = subprocess.run([peer, "expect", store_name, "gone", "-1", "0"], capture_output=True, timeout=120)
    assert result.returncode == 0, "the C++ reader sees a missing key as missing"
    store["bytes"] = b"\x07" * 5000
    result = subprocess.run(
        [peer, "expect", store_name, "bytes", "5000", "7"], capture_output=True, timeout=120
    )
    assert result.returncode == 0, "bytes are the value's bytes, as published"
    store.unlink()


# --- wrong arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "k" * 225, "é" * 113, 1, None, b"key", ("a",)])
def test_bad_keys_are_invalid_arguments(store_name: str, key: Any) -> None:
    store = hakobu.Store(store_name)
    with pytest.raises(hakobu.InvalidArgument):
        store[key] = 1
    with pytest.raises(hakobu.InvalidArgument):
        store[key]
    with pytest.raises(hakobu.InvalidArgument):
        del store[key]
    with pytest.raises(hakobu.InvalidArgument):
        key in store  # noqa: B015
    with pytest.raises(hakobu.InvalidArgument):
        store.wait(key, timeout=0)
    assert len(store) == 0, "nothing was published"
    store["k" * 224] = "longest"
    store["é" * 112] = "longest in UTF-8"
    assert store["k" * 224] == "longest" and store["é" * 112] == "longest in UTF-8"
    store.unlink()


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 300, 3, None])
def test_bad_names_are_invalid_names(name: Any) -> None:
    with pytest.raises(hakobu.InvalidName):
        hakobu.Store(name)


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "8", 1 << 40])
def test_bad_capacities_are_invalid_arguments(store_name: str, capacity: Any) -> None:
    with pytest.raises(hakobu.InvalidArgument):
        hakobu.Store(store_name, capacity=capacity)


def test_create_and_attach_only(store_name: str) -> None:
    with pytest.raises(hakobu.NotFound):
        hakobu.Store(store_name, create=False)
    store = hakobu.Store(store_name, create=True, capacity=8)
    with pytest.raises(hakobu.AlreadyExists):
        hakobu.Store(store_name, create=True)
    attached = hakobu.Store(store_name, create=False, capacity=1024)
    assert attached.capacity == 8, "attaching keeps the store's capacity"
    attached.close()
    store.unlink()
    with pytest.raises(hakobu.NotFound):
        hakobu.Store(store_name, create=False)


@needs_root
def test_a_value_too_large_for_dev_shm(tmp_path: Path) -> None:
    process = start_with_small_dev_shm("store_small_shm", 64)  # a 48 MiB /dev/shm, no huge pages
    code, out, err = finish(process)
    assert code == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    for attempt in ("too_big", "too_big_bytes"):
        assert "64.0 MiB" in str(seen[attempt]) and "free of" in str(seen[attempt]), seen[attempt]
    assert seen["kept"], "the key kept its old value"
    assert seen["keys"] == ["X"]
