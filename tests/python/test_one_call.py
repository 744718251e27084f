"""One call into the extension per put and per get: arrays of the built-in
numeric types, bytes, scalars and small pickles are encoded and decoded by
hakobu._core itself (Queue._core.put_object / get_object); everything else
keeps the Python codec, in the same wire format. And a process that ends
while another library (JAX) still holds received arrays exits quietly and
leaves nothing of its domain behind."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, PROGRAMS, files_of_domain, finish, start

import hakobu
from hakobu import _codec, _core

sys.path.insert(0, str(PROGRAMS))
from cases import fingerprint

NUMERIC = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.clongdouble,
    np.intc,
    np.uintc,
    np.longlong,
    np.ulonglong,
]

EXOTIC = {
    "structured": np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8", (2,)), ("name", "U5")]),
    "datetime": np.arange(6).astype("M8[ms]"),
    "timedelta": np.arange(6).astype("m8[s]"),
    "unicode": np.array(["a", "bc", "日本"]),
    "bytes-strings": np.array([b"x", b"yz"]),
    "void": np.zeros(4, dtype="V3"),
    "big-endian-float": np.arange(10, dtype=">f8"),
    "big-endian-int": np.arange(10, dtype=">i4").reshape(2, 5),
}


def live_blocks() -> int:
    gc.collect()
    return int(_core.domain_stats()["live_blocks"])


def values(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct, exactly representable values of ``dtype`` in ``shape``."""
    n = int(np.prod(shape))
    if np.dtype(dtype) == np.bool_:
        return (np.arange(n) % 3 == 0).reshape(shape)
    out = (np.arange(n) % 100).astype(dtype)
    if np.dtype(dtype).kind == "c":
        out = out + 1j * out[::-1]
    return out.reshape(shape)


def layouts(dtype: Any) -> dict[str, np.ndarray]:
    """Every layout the extension takes, small (inline in the slot) and large (a heap block)."""
    big = values(dtype, (300, 200))
    return {
        "small-c": values(dtype, (2, 3)),
        "small-f": np.asfortranarray(values(dtype, (2, 3))),
        "small-strided": values(dtype, (4, 6))[::2, ::-3],
        "0-d": values(dtype, ()),
        "empty": values(dtype, (4, 0, 3)),
        "large-c": big,
        "large-f": np.asfortranarray(big),
        "large-strided": big[::3, ::-2],
        "large-transposed-strided": big.T[::2],
    }


def round_trip_in_one_call(q: hakobu.Queue, array: np.ndarray) -> Any:
    """Sends and receives through the one-call entry points; asserts the extension took both ends."""
    assert q._core.put_object(array, 5.0), "the extension sends it"
    received = q._core.get_object(5.0, True)
    assert isinstance(received, np.ndarray), "the extension decodes it"
    return received


@pytest.mark.parametrize("dtype", NUMERIC, ids=[np.dtype(t).name for t in NUMERIC])
def test_numeric_dtypes_and_layouts_round_trip_in_one_call(name: str, dtype: Any) -> None:
    with hakobu.Queue(name) as q:
        for label, array in layouts(dtype).items():
            received = round_trip_in_one_call(q, array)
            assert received.dtype == array.dtype and received.dtype.str == array.dtype.str, label
            assert received.shape == array.shape and np.array_equal(received, array), label
            assert received.flags.writeable, label
            fortran_only = array.flags.f_contiguous and not array.flags.c_contiguous
            assert received.flags.f_contiguous if fortran_only else received.flags.c_contiguous, label
            # Writable, and the receiver's own: writing changes nothing of the sender's.
            if received.size:
                before = array.copy()
                received.flat[0] = received.flat[-1]
                assert np.array_equal(array, before), label


def test_the_extension_writes_the_python_codecs_format(name: str) -> None:
    """Messages written by the extension read back through the Python codec's layout, and the other way round."""
    with hakobu.Queue(name) as q:
        for dtype in NUMERIC:
            for label, array in layouts(dtype).items():
                assert q._core.put_object(array, 5.0)
                message = q._core.get(5.0)
                layout = message.array_layout()
                assert layout is not None
                code, bits, lanes, typestr, shape, _strides, _offset, source = layout
                assert (code, bits, lanes, typestr) == _codec.dtype_fields(array.dtype), (dtype, label)
                assert tuple(shape) == array.shape and source == 0
                assert fingerprint(_codec.decode(message)) == fingerprint(array), (dtype, label)
                # The Python encoder's message, decoded by the extension.
                _codec._put_array(q._core, array, 5.0)
                back = q._core.get_object(5.0, True)
                assert isinstance(back, np.ndarray) and fingerprint(back) == fingerprint(array), (
                    dtype,
                    label,
                )


def test_consecutive_small_arrays_each_carry_their_own_header(name: str) -> None:
    """The extension reuses the last header for an array like the last one: only when it is alike."""
    base = np.arange(6, dtype=np.int64).reshape(2, 3)
    sequence = [
        base,
        base + 1,
        base.astype(np.float64),
        base.T.copy(),
        np.asfortranarray(base),
        base.reshape(3, 2),
        base.reshape(6),
        base.astype(np.uint64),
        base.view(np.int64),
        base[:1],
    ]
    with hakobu.Queue(name) as q:
        for array in sequence * 2:
            received = round_trip_in_one_call(q, array)
            assert fingerprint(received) == fingerprint(array) and received.strides == array.strides


@pytest.mark.parametrize("label", list(EXOTIC))
def test_exotic_dtypes_keep_the_python_codec_and_round_trip_exactly(name: str, label: str) -> None:
    array = EXOTIC[label]
    with hakobu.Queue(name) as q:
        assert not q._core.put_object(array, 5.0), "left to the Python codec"
        q.put(array)
        received = q.get(timeout=5)
        assert received.dtype == array.dtype and received.dtype.descr == array.dtype.descr
        assert fingerprint(received) == fingerprint(array) and received.flags.writeable


def test_arrays_from_a_cpp_producer_without_a_type_string(name: str) -> None:
    """A C++ producer sends the DLPack triple alone; the extension maps it as the Python codec does."""
    with hakobu.Queue(name) as q:
        for code, bits, expected in [
            (2, 64, np.float64),
            (0, 16, np.int16),
            (1, 8, np.uint8),
            (6, 8, np.bool_),
            (5, 64, np.complex64),
            (2, 16, np.float16),
        ]:
            for shape in [(3,), (40, 50)]:  # inline and in a block
                loan = q._core.loan_array(code, bits, 1, "", list(shape), False)
                data = values(expected, shape)
                target = np.ndarray(shape, expected, buffer=memoryview(loan), offset=loan.data_offset)
                target[...] = data
                del target
                q._core.put_loan(loan, 5.0)
                received = q._core.get_object(5.0, True)
                assert isinstance(received, np.ndarray) and received.dtype == np.dtype(expected)
                assert np.array_equal(received, data)
        # Four lanes of bytes: no NumPy number; the Python codec reads it as void elements.
        loan = q._core.loan_array(1, 8, 4, "", [2], False)
        memoryview(loan)[loan.data_offset : loan.data_offset + 8] = b"abcdefgh"
        q._core.put_loan(loan, 5.0)
        received = q.get(timeout=5)
        assert received.dtype == np.dtype("V4") and received.tobytes() == b"abcdefgh"


def test_large_received_arrays_are_views_that_keep_the_message_alive(name: str) -> None:
    with hakobu.Queue(name) as q:
        before = live_blocks()
        q.put(np.arange(100_000, dtype=np.float64))
        received = q.get()
        assert isinstance(received.base, _core.Message) and received.base.in_shared_memory
        assert received.flags.writeable and hakobu.is_shared(received)
        received[0] = -1.0
        view = received[10:20]
        views_view = view[::2]
        del received, view
        assert live_blocks() == before + 1, "a view of a view keeps the block"
        assert views_view[0] == 10.0 and views_view[-1] == 18.0
        del views_view
        assert live_blocks() == before, "the block returns when the last view dies"


def test_small_received_arrays_own_their_elements(name: str) -> None:
    """A message small enough to ride inline in the slot holds no shared memory: the array owns a copy."""
    with hakobu.Queue(name) as q:
        before = live_blocks()
        q.put(np.arange(8, dtype=np.float64))
        received = q.get()
        assert live_blocks() == before, "no heap block for an inline message"
        assert received.flags.writeable and received.flags.owndata and not hakobu.is_shared(received)
        received[3] = 99.0
        # Sent on, it is copied like any private array.
        q.put(received[::2])
        assert np.array_equal(q.get(), [0.0, 2.0, 4.0, 6.0])


def test_arrays_in_hakobu_memory_keep_their_no_copy_path(name: str) -> None:
    with hakobu.Queue(name) as q:
        made = hakobu.array(np.arange(10_000.0))
        assert not q._core.put_object(made, 5.0), "by reference: the Python codec's path"
        q.put(made[::-3])
        received = q.get()
        assert received.ctypes.data == made[::-3].ctypes.data and np.array_equal(received, made[::-3])
        # A received large array sent on is sent by reference too.
        q.put(np.arange(50_000.0))
        first = q.get()
        q.put(first[5:])
        again = q.get()
        assert np.shares_memory(again, first) and np.array_equal(again, np.arange(5.0, 50_000.0))


def test_bytes_scalars_and_small_pickles_in_one_call(name: str) -> None:
    with hakobu.Queue(name) as q:
        for obj in [b"", b"raw \x00 bytes", bytearray(b"x" * 3000), b"y" * 100_000]:
            assert q._core.put_object(obj, 5.0)
            assert q._core.get_object(5.0, True) == bytes(obj)
        assert q._core.put_object(memoryview(b"view"), 5.0)
        assert q._core.get_object(5.0, True) == b"view"
        for scalar in [None, True, 0, -(2**70), 2.5, float("inf"), 1 - 2j, "", "日本語" * 1000]:
            assert q._core.put_object(scalar, 5.0)
            assert q._core.get_object(5.0, True) == scalar
        # Objects whose pickle keeps every buffer in band: pickled by the extension too.
        for obj in [
            {"step": 1, "loss": 0.25},
            [1, "two", (3.0,)],
            {"big": list(range(20_000))},
            {"a": np.arange(5)},
        ]:
            assert q._core.put_object(obj, 5.0)
            assert fingerprint(q._core.get_object(5.0, True)) == fingerprint(obj)
        # Non-contiguous memoryviews still go through the codec (as bytes).
        strided = memoryview(bytes(range(10)))[::2]
        assert not q._core.put_object(strided, 5.0)
        q.put(strided)
        assert q.get() == bytes(range(0, 10, 2))


class _Refuses:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        raise self.error


def test_objects_the_extension_cannot_pickle_in_band_go_to_the_codec(name: str) -> None:
    with hakobu.Queue(name) as q:
        # A large buffer inside: the codec sends it out of band, as an attachment in shared memory.
        large = {"x": np.arange(100_000.0), "tag": "t"}
        assert not q._core.put_object(large, 5.0)
        q.put(large)
        received = q.get()
        assert hakobu.is_shared(received["x"]) and fingerprint(received) == fingerprint(large)
        # Plain pickle cannot: cloudpickle can.
        square = lambda x: x * x  # noqa: E731
        assert not q._core.put_object(square, 5.0)
        q.put(square)
        assert q.get()(7) == 49
        # An error of the object's own is raised by the codec, as before; nothing is sent.
        assert not q._core.put_object(_Refuses(ValueError("no")), 5.0)
        with pytest.raises(ValueError, match="no"):
            q.put(_Refuses(ValueError("no")))
        # An interrupt is not the codec's to retry: it propagates from the extension.
        with pytest.raises(KeyboardInterrupt):
            q._core.put_object(_Refuses(KeyboardInterrupt()), 5.0)
        assert q.empty()


def test_restricted_queues_still_refuse_what_they_refused(name: str) -> None:
    with hakobu.Queue(name, allow_pickle=False) as q:
        q.put(7)
        q.put({"plain": [1, 2]})
        assert q.get() == 7 and q.get() == {"plain": [1, 2]}
        q.put(np.dtype("f8"))  # unpickling it would call numpy: refused
        with pytest.raises(hakobu.UnpicklingRefused):
            q.get()
        q.put(np.arange(3))
        assert np.array_equal(q.get(), [0, 1, 2]), "arrays are unaffected"


def test_timeouts_and_errors_of_the_one_call_path(name: str) -> None:
    with hakobu.Queue(name, capacity=1) as q:
        q.put(np.arange(3))
        with pytest.raises(hakobu.Full):
            q.put(np.arange(3), block=False)
        with pytest.raises(hakobu.Full):
            q.put(np.arange(3), timeout=0.01)
        with pytest.raises(hakobu.InvalidArgument):
            q._core.put_object(np.arange(3), float("nan"))
        q.get()
        with pytest.raises(hakobu.Empty):
            q.get(block=False)
        with pytest.raises(hakobu.Empty):
            q.get(timeout=0.01)
        with pytest.raises(hakobu.InvalidArgument):
            q._core.get_object(-1.0, True)


def test_arrays_between_two_separately_started_programs(name: str) -> None:
    """Every numeric dtype and layout, sent by this program, echoed by another, compared here."""
    inbox, outbox = hakobu.Queue(name + "-in"), hakobu.Queue(name + "-out")
    try:
        sent = [array for dtype in NUMERIC for array in layouts(dtype).values()] + list(EXOTIC.values())
        echo = start("echo", inbox.name, outbox.name, len(sent))
        for array in sent:
            inbox.put(array)
        for array in sent:
            received = outbox.get(timeout=60)
            assert fingerprint(received) == fingerprint(array) and received.flags.writeable
        code, out, err = finish(echo)
        assert code == 0, err
        # The echo saw each message as an ndarray of the same type and shape.
        assert out.splitlines() == [f"{a.dtype.str} {a.shape}" for a in sent]
    finally:
        inbox.unlink()
        outbox.unlink()


# --- JAX: a real DLPack consumer --------------------------------------------------------------


def test_jax_takes_received_arrays_through_dlpack_without_a_copy(name: str) -> None:
    """JAX (in a separately started program: this process forks in other tests) shares the received memory."""
    pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")
    with hakobu.Queue(name) as q:
        consumer = start("jax_consumer", name, 3, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        q.put(np.arange(100_000, dtype=np.float32))  # a heap block
        q.put(np.arange(5_000, dtype=np.int32).reshape(50, 100))
        q.put(hakobu.array(np.arange(3_000, dtype=np.float32)))  # by reference
        code, out, err = finish(consumer)
        assert code == 0, err
        assert out.splitlines() == [
            "float32 (100000,) equal=True shared=True kept=True",
            "int32 (50, 100) equal=True shared=True kept=True",
            "float32 (3000,) equal=True shared=True kept=True",
        ]


def test_a_program_that_ends_holding_jax_arrays_exits_quietly_and_leaves_nothing(name: str) -> None:
    pytest.importorskip("jax", reason="jax is in the test extra: pip install .[test]")
    domain = f"{DOMAIN}-jax"
    env = {**os.environ, "HAKOBU_DOMAIN": domain, "JAX_PLATFORMS": "cpu"}
    holder = start("hold_jax", name, env=env)
    code, out, err = finish(holder)
    assert code == 0, err
    assert out == "shared\n", out
    assert err == "", "no leak report, no warning"
    assert files_of_domain(domain) == [], "the last process out removed the domain"
