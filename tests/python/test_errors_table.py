"""Every C++ error becomes the documented hakobu exception: the table the core reports
(hakobu._core.error_table(), every value of every error enum it raises) is the one below,
its classes are the hakobu classes under HakobuError, and a class the core needs that is
missing fails `import hakobu` itself, not the first error."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

import hakobu
from hakobu import _core, _errors

WATCHDOG = 120.0  # seconds: against a hang, never a measure of speed

# (C++ error enum, enumerator) -> hakobu class. The enums are in include/hakobu/error.hpp
# (WatchError in queue.hpp, SubscribeError in topic.hpp); the classes and their standard
# bases in README.md ("Errors are one class per kind under hakobu.HakobuError") and
# hakobu/_errors.py.
DOCUMENTED = {
    ("OpenError", "InvalidName"): "InvalidName",
    ("OpenError", "NotFound"): "NotFound",
    ("OpenError", "AlreadyExists"): "AlreadyExists",
    ("OpenError", "PermissionDenied"): "AccessDenied",
    ("OpenError", "Incompatible"): "Incompatible",
    ("OpenError", "Corrupt"): "Corrupt",
    ("OpenError", "OutOfMemory"): "OutOfSharedMemory",
    ("OpenError", "TooManyProcesses"): "TooManyProcesses",
    ("OpenError", "InvalidArgument"): "InvalidArgument",
    ("OpenError", "SystemError"): "SystemFailure",
    ("PutError", "Full"): "Full",
    ("PutError", "Timeout"): "Full",  # as queue.Queue.put
    ("PutError", "Closed"): "Closed",
    ("PutError", "Unlinked"): "Unlinked",
    ("PutError", "TooLarge"): "TooLarge",
    ("PutError", "OutOfMemory"): "OutOfSharedMemory",
    ("PutError", "Invalid"): "InvalidArgument",
    ("GetError", "Empty"): "Empty",
    ("GetError", "Timeout"): "Empty",  # as queue.Queue.get
    ("GetError", "Closed"): "Closed",
    ("GetError", "Unlinked"): "Unlinked",
    ("GetError", "Corrupt"): "Corrupt",
    ("GetError", "OutOfMemory"): "OutOfSharedMemory",
    ("GetError", "Ended"): "EndOfStream",
    ("GetError", "SendersLost"): "SendersLost",
    ("LoanError", "TooLarge"): "TooLarge",
    ("LoanError", "OutOfMemory"): "OutOfSharedMemory",
    ("LoanError", "Closed"): "Closed",
    ("LoanError", "InvalidArgument"): "InvalidArgument",
    ("UnlinkError", "NotCreator"): "NotCreator",
    ("UnlinkError", "Closed"): "Closed",
    ("UnlinkError", "NotFound"): "NotFound",
    ("UnlinkError", "InvalidName"): "InvalidName",
    ("UnlinkError", "PermissionDenied"): "AccessDenied",
    ("UnlinkError", "SystemError"): "SystemFailure",
    ("ArrayError", "NotAnArray"): "InvalidArgument",
    ("ArrayError", "Corrupt"): "Corrupt",
    # Loan.attach returns False for NotShared and OtherDomain; the others are raised.
    ("AttachError", "NoRoom"): "InvalidArgument",
    ("AttachError", "NotShared"): "InvalidArgument",
    ("AttachError", "OtherDomain"): "InvalidArgument",
    ("AttachError", "Invalid"): "InvalidArgument",
    # Queue.watch returns False for Full; the others are raised.
    ("WatchError", "Closed"): "Closed",
    ("WatchError", "Full"): "SystemFailure",
    ("WatchError", "SystemError"): "SystemFailure",
    # Stores (include/hakobu/store.hpp): a missing key is a KeyError, a bad key a wrong argument.
    ("StorePutError", "InvalidKey"): "InvalidArgument",
    ("StorePutError", "AlreadyExists"): "AlreadyExists",
    ("StorePutError", "Full"): "Full",
    ("StorePutError", "TooLarge"): "TooLarge",
    ("StorePutError", "OutOfMemory"): "OutOfSharedMemory",
    ("StorePutError", "Invalid"): "InvalidArgument",
    ("StorePutError", "Busy"): "Busy",
    ("StorePutError", "Closed"): "Closed",
    ("StoreGetError", "InvalidKey"): "InvalidArgument",
    ("StoreGetError", "NotFound"): "KeyNotFound",
    ("StoreGetError", "Corrupt"): "Corrupt",
    ("StoreGetError", "OutOfMemory"): "OutOfSharedMemory",
    ("StoreGetError", "Busy"): "Busy",
    ("StoreGetError", "Closed"): "Closed",
    ("StoreEraseError", "InvalidKey"): "InvalidArgument",
    ("StoreEraseError", "NotFound"): "KeyNotFound",
    ("StoreEraseError", "Closed"): "Closed",
    ("StoreWaitError", "InvalidKey"): "InvalidArgument",
    ("StoreWaitError", "Timeout"): "KeyNotFound",  # as a lookup (Queue.get: Empty after a timeout too)
    ("StoreWaitError", "Corrupt"): "Corrupt",
    ("StoreWaitError", "OutOfMemory"): "OutOfSharedMemory",
    ("StoreWaitError", "Busy"): "Busy",
    ("StoreWaitError", "Closed"): "Closed",
    # Lock.acquire returns False for WouldBlock and Timeout; Forked is raised.
    ("AcquireError", "WouldBlock"): "NotHeld",
    ("AcquireError", "Timeout"): "NotHeld",
    ("AcquireError", "Forked"): "ForkedHandle",
    ("AcquireError", "TooDeep"): "InvalidArgument",  # an RLock's recursion count at its limit
    ("ReleaseError", "NotHeld"): "NotHeld",
    ("ReleaseError", "NotOwner"): "NotHeld",
    ("ReleaseError", "NotOwnerThread"): "NotHeld",
    ("ReleaseError", "Forked"): "ForkedHandle",
    # Semaphores: a bounded one's over-release is a ValueError, as threading's.
    ("SemaphoreReleaseError", "InvalidArgument"): "InvalidArgument",
    ("SemaphoreReleaseError", "TooMany"): "TooManyReleases",
    ("SemaphoreReleaseError", "Forked"): "ForkedHandle",
    # Barriers: a timed-out wait broke the barrier, as threading's raises BrokenBarrierError.
    ("BarrierError", "Broken"): "BrokenBarrierError",
    ("BarrierError", "Timeout"): "BrokenBarrierError",
    ("BarrierError", "Forked"): "ForkedHandle",
    # Condition.wait takes the lock back itself: LockTimeout is never raised from Python.
    ("ConditionError", "NotHeld"): "NotHeld",
    ("ConditionError", "LockTimeout"): "NotHeld",
    ("ConditionError", "Forked"): "ForkedHandle",
    # Value/Array atomics: dtype and index are checked before the core sees them.
    ("ValueError", "TypeMismatch"): "InvalidArgument",
    ("ValueError", "OutOfRange"): "InvalidArgument",
    # Topic.subscribe (include/hakobu/topic.hpp): a full subscriber table has its own class.
    ("SubscribeError", "Closed"): "Closed",
    ("SubscribeError", "Unlinked"): "Unlinked",
    ("SubscribeError", "TooManySubscribers"): "TooManySubscribers",
    ("SubscribeError", "InvalidArgument"): "InvalidArgument",
}

# The standard classes README.md says hakobu's derive from.
STANDARD_BASES = {
    "Empty": queue.Empty,
    "Full": queue.Full,
    "NotFound": FileNotFoundError,
    "InvalidName": ValueError,
    "InvalidArgument": ValueError,
    "OutOfSharedMemory": MemoryError,
    "KeyNotFound": KeyError,
    "NotHeld": RuntimeError,
    "ForkedHandle": RuntimeError,
    "TooManyReleases": ValueError,
    "BrokenBarrierError": threading.BrokenBarrierError,
}


def test_every_error_of_the_core_is_listed_once_with_the_documented_class() -> None:
    table = _core.error_table()
    keys = [(enum, value) for enum, value, _ in table]
    assert len(keys) == len(set(keys)), "an enumerator is listed twice"
    assert set(keys) == set(DOCUMENTED), "the core's enumerators differ from the documented table"
    for enum, value, cls in table:
        expected = getattr(hakobu, DOCUMENTED[enum, value])
        assert cls is expected, f"{enum}::{value} raises {cls}, documented: {expected.__name__}"


def test_the_table_covers_every_enum_the_readme_names() -> None:
    enums = {enum for enum, _, _ in _core.error_table()}
    assert {"OpenError", "PutError", "GetError", "LoanError", "UnlinkError", "ArrayError"} <= enums


@pytest.mark.parametrize("name", sorted(set(DOCUMENTED.values())))
def test_each_class_is_public_and_a_hakobu_error(name: str) -> None:
    cls = getattr(hakobu, name)
    assert name in hakobu.__all__
    assert issubclass(cls, hakobu.HakobuError)
    assert cls is getattr(_errors, name)


@pytest.mark.parametrize(("name", "base"), sorted(STANDARD_BASES.items()))
def test_classes_derive_from_the_documented_standard_ones(name: str, base: type[Exception]) -> None:
    assert issubclass(getattr(hakobu, name), base)


def test_an_error_raised_in_the_core_is_the_bound_class() -> None:
    # The name is checked in C++ (convert.cpp), before anything is attached.
    with pytest.raises(hakobu.InvalidName, match="invalid queue name"):
        _core.remove("no/slash", "")


def module_without(name: str) -> types.ModuleType:
    fake = types.ModuleType("fake_errors")
    fake.__dict__.update({k: v for k, v in vars(_errors).items() if k != name and not k.startswith("__")})
    return fake


@pytest.mark.parametrize("missing", ["Corrupt", "HakobuError"])
def test_binding_a_module_without_a_class_fails_and_keeps_the_bound_ones(missing: str) -> None:
    with pytest.raises(ImportError, match=rf"fake_errors\.{missing} is missing"):
        _core.bind_errors(module_without(missing))
    with pytest.raises(hakobu.InvalidName):
        _core.remove("no/slash", "")
    assert all(cls is getattr(hakobu, DOCUMENTED[e, v]) for e, v, cls in _core.error_table())


def test_binding_a_class_outside_hakobu_error_fails() -> None:
    fake = module_without("Closed")
    fake.Closed = RuntimeError  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match=r"fake_errors\.Closed does not derive from HakobuError"):
        _core.bind_errors(fake)
    assert _core.error_table()[0][2] is hakobu.InvalidName


def test_binding_again_replaces_the_classes() -> None:
    class Corrupt(hakobu.HakobuError):
        pass

    fake = module_without("Corrupt")
    fake.Corrupt = Corrupt  # type: ignore[attr-defined]
    try:
        _core.bind_errors(fake)
        assert (("OpenError", "Corrupt", Corrupt)) in _core.error_table()
    finally:
        _core.bind_errors(_errors)
    assert ("OpenError", "Corrupt", hakobu.Corrupt) in _core.error_table()


def test_a_missing_class_fails_the_import_of_hakobu(tmp_path: Path) -> None:
    """In a separately started interpreter, a copy of the installed package whose _errors.py
    lacks Corrupt: `import hakobu` fails with a message naming it."""
    package = Path(hakobu.__file__).parent
    copy = tmp_path / "hakobu"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    extension = Path(_core.__file__)
    if not (copy / extension.name).exists():  # an editable install keeps it in the build tree
        shutil.copy2(extension, copy / extension.name)
    errors = copy / "_errors.py"
    source = errors.read_text()
    assert "class Corrupt(HakobuError):" in source
    errors.write_text(source.replace("class Corrupt(HakobuError):", "class Damaged(HakobuError):"))
    result = subprocess.run(
        [sys.executable, "-c", "import hakobu; print(hakobu.__file__)"],
        cwd=tmp_path,  # the copy comes first on sys.path
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert "ImportError: hakobu._core: hakobu._errors.Corrupt is missing or not a class" in result.stderr
