"""The parent's main script: which of its names workers may find by reference, and running it there.

Functions and classes of the parent's main script go by reference when the
workers can find them there, as multiprocessing's "spawn" does, so that they
may use module state that cannot be pickled (a lock, a connection): a worker
then runs the script once, as module ``__mp_main__`` (its ``if __name__ ==
"__main__":`` block does not run), the first time it needs such a name
(worker.py). That holds when the script is a file with a main guard, the
name is bound at its top level outside the guard, and so are the globals the
function (or the class's methods) uses (MainScript, main_reference). Anything
else of the main script (no file: ``python -c``, a notebook, exec'd code; no
guard; a lambda; a function defined or using names defined under the guard)
travels by value, with cloudpickle (pickling.py): such scripts are never run
again by the workers.

The parent side (main_script, main_reference) and what the worker learns
(adopt_in_worker, script_running) are here together; main_global, what a
reference unpickles to, serves both.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dis
import os
import sys
import threading
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [side for side in sides if isinstance(side, ast.Name) and side.id == "__name__"]
    constants = [side for side in sides if isinstance(side, ast.Constant) and side.value == "__main__"]
    return len(names) == 1 and len(constants) == 1


def _bound_at_top(statements: list[ast.stmt], names: set[str]) -> bool:
    """Adds the names ``statements`` bind when the script is imported (the guard's body
    excluded, its ``else`` included); True if one of them is a main guard."""
    guarded = False
    for node in statements:
        if _is_main_guard(node):
            guarded = True
            assert isinstance(node, ast.If)
            _bound_at_top(node.orelse, names)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*" and isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    module = sys.modules.get(node.module)
                    exported = getattr(module, "__all__", None) or [
                        n for n in dir(module) if not n.startswith("_")
                    ]
                    names.update(exported)
                elif alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
            continue
        bodies = [getattr(node, field, None) for field in ("body", "orelse", "finalbody")]
        bodies += [handler.body for handler in getattr(node, "handlers", [])]
        if isinstance(node, ast.Try) or any(isinstance(body, list) for body in bodies):
            for body in bodies:
                if isinstance(body, list):
                    guarded |= _bound_at_top(body, names)
            for handler in getattr(node, "handlers", []):
                if handler.name:
                    names.add(handler.name)
            heads = [getattr(node, field, None) for field in ("target", "test", "iter", "items")]
        else:
            heads = [node]
        for head in heads:
            for part in head if isinstance(head, list) else [head]:
                if part is None:
                    continue
                for child in ast.walk(part):
                    if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                        names.add(child.id)
    return guarded


@dataclass(frozen=True)
class MainScript:
    """The parent's main script, when workers may run it to find its names by reference."""

    path: str
    module: Optional[str]  # its module name when started with ``python -m``
    names: frozenset[str]  # bound at its top level, outside the main guard


_main_script_cache: list[Optional[MainScript]] = []


def main_script() -> Optional[MainScript]:
    """The main script if it is a file with a main guard (see the module's docstring), else None."""
    if _main_script_cache:
        return _main_script_cache[0]
    found: Optional[MainScript] = None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if isinstance(path, str) and path.endswith(".py") and os.path.isfile(path):
        try:
            with open(path, "rb") as source:
                tree = ast.parse(source.read(), path)
            names: set[str] = set()
            if _bound_at_top(tree.body, names):
                module = getattr(spec, "name", None)
                found = MainScript(
                    os.path.abspath(path), module if isinstance(module, str) else None, frozenset(names)
                )
        except (OSError, SyntaxError, ValueError):
            found = None
    _main_script_cache.append(found)
    return found


def _global_names(code: types.CodeType) -> set[str]:
    """Global names a code object (and the functions defined in it) reads or writes."""
    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL")
    }
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _functions_of(obj: Any) -> list[types.FunctionType]:
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for value in vars(obj).values():
        for inner in (
            value,
            getattr(value, "__func__", None),
            getattr(value, "fget", None),
            getattr(value, "fset", None),
        ):
            if isinstance(inner, types.FunctionType):
                found.append(inner)
    return found


_by_reference: weakref.WeakKeyDictionary[Any, Optional[str]] = weakref.WeakKeyDictionary()
_by_reference_lock = threading.Lock()


def main_reference(obj: Any) -> Optional[str]:
    """The qualified name by which workers find ``obj`` (a function or class of the main
    script) in their import of the script; None when it must travel by value."""
    module = getattr(obj, "__module__", None)
    if module == "__mp_main__":  # in a worker: the script it imported; the parent has it as __main__
        return _lookup_name(sys.modules.get("__mp_main__"), obj)
    if module != "__main__" or _main_loader is not None:  # in a worker, __main__ is a by-value copy
        return None
    with _by_reference_lock:
        try:
            return _by_reference[obj]
        except KeyError:
            pass
        except TypeError:  # not weakly referenceable
            return None
    script = main_script()
    reference = None
    if script is not None:
        reference = _lookup_name(sys.modules.get("__main__"), obj)
        if reference is not None and reference.split(".")[0] not in script.names:
            reference = None
        if reference is not None:
            for function in _functions_of(obj):
                if function.__globals__ is not vars(sys.modules["__main__"]):
                    continue  # from elsewhere: its own module's globals
                if any(
                    name not in script.names and not hasattr(builtins, name)
                    for name in _global_names(function.__code__)
                ):
                    reference = None
                    break
    with _by_reference_lock:
        _by_reference[obj] = reference
    return reference


def _lookup_name(module: Any, obj: Any) -> Optional[str]:
    qualname = getattr(obj, "__qualname__", None)
    if module is None or not isinstance(qualname, str) or "<" in qualname:
        return None
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return qualname if found is obj else None


# Set in a worker: imports the parent's main script (once) for main_global (see adopt_in_worker).
_main_loader: Optional[Callable[[], types.ModuleType]] = None
# True in a worker while it runs the parent's main script: a pool made then would start
# workers from workers; the script must make its pools under its main guard.
_running_script = False


def main_global(qualname: str) -> Any:
    """Unpickles a name of the main script: in a worker, of its import of the script; in the
    parent, of ``__main__``."""
    module = _main_loader() if _main_loader is not None else sys.modules["__main__"]
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def running_script() -> bool:
    """True in a worker while it runs the parent's main script (no pool may be made then)."""
    return _running_script


# --- in a worker --------------------------------------------------------------------------------


@contextlib.contextmanager
def script_running() -> Iterator[None]:
    """Marks the worker's run of the parent's main script (see running_script)."""
    global _running_script
    _running_script = True
    try:
        yield
    finally:
        _running_script = False


def adopt_in_worker(
    where: Optional[tuple[str, Optional[str]]], load: Optional[Callable[[], types.ModuleType]]
) -> None:
    """In a worker, told by its parent where the parent's main script is (path, module name;
    None: nowhere workers may run it): main_global finds the script's names in the module
    ``load`` returns (the worker runs the script at the first need).

    A pool made by a task here sends the same script's names by reference: its
    workers find them where this one does (not in the worker's own module,
    which runs as __main__).
    """
    global _main_loader
    _main_loader = load
    inherited = None if where is None else MainScript(where[0], where[1], frozenset())
    _main_script_cache[:] = [inherited]
