"""
hakobu's C++ core: named shared-memory queues (use the hakobu package, not this module)
"""

from collections.abc import Sequence


class Message:
    """
    A received message; its bytes are shared memory, exported through the buffer protocol
    """

    @property
    def kind(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def in_shared_memory(self) -> bool: ...

    def array_layout(self) -> tuple[int, int, int, str, list[int], list[int], int] | None:
        """
        (code, bits, lanes, typestr, shape, strides, data_offset) of an array message, else None
        """

class Loan:
    """Shared memory being written, sent without a copy"""

    @property
    def nbytes(self) -> int: ...

    @property
    def data_offset(self) -> int: ...

class Queue:
    """A named shared-memory queue (use hakobu.Queue)"""

    def __init__(self, name: str, create: bool | None, capacity: int, inline_capacity: int, domain: str, spin: float) -> None: ...

    def put_bytes(self, data: object, kind: int, timeout: float | None) -> None: ...

    def loan_array(self, code: int, bits: int, lanes: int, typestr: str, shape: Sequence[int], fortran_order: bool) -> Loan: ...

    def put_loan(self, loan: Loan, timeout: float | None) -> None: ...

    def get(self, timeout: float | None) -> Message: ...

    def qsize(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def is_creator(self) -> bool: ...

    @property
    def is_open(self) -> bool: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...

    def unlink(self) -> None: ...

def remove(name: str, domain: str = '') -> None:
    """Removes a queue by name, whoever created it"""

def default_domain() -> str:
    """The domain used when none is given"""

def domain_stats(name: str = '') -> dict:
    """
    Heap use and attached processes of a domain (attaches to it, creating it if needed)
    """

def collect_garbage(name: str = '') -> int:
    """Reclaims what dead processes held; returns how many were reclaimed"""
