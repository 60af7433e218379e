"""One fake CUDA device shared by the fake `pycuda.driver` and the fake `tensorrt`, and the log
of every call the code under test made into either.

Device memory is real host memory (a bytearray per allocation, found by its address), so a fake
engine reads the bytes the code copied in and the code reads back the bytes the engine wrote:
buffer sizes, addresses and copies are checked for real, not assumed.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """One call into a fake; `api` names it, e.g. "pycuda.mem_alloc"."""

    api: str
    args: tuple[Any, ...]
    thread: str


@dataclass
class FakeGpu:
    """The device: its facts, its memory, the context stack of each thread, the call log."""

    name: str = "NVIDIA Fake Orin"
    compute_capability: tuple[int, int] = (8, 7)
    multiprocessors: int = 16
    total_bytes: int = 8 << 30
    calls: list[Call] = field(default_factory=list)
    memory: dict[int, bytearray] = field(default_factory=dict)
    host_pinned: dict[int, int] = field(default_factory=dict)  # id -> bytes, page-locked host
    _addresses: Any = field(default_factory=lambda: itertools.count(0x7F00_0000_0000, 0x10_0000))
    _stacks: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, api: str, *args: Any) -> None:
        with self._lock:
            self.calls.append(Call(api, args, threading.current_thread().name))

    def called(self, api: str) -> list[Call]:
        return [c for c in self.calls if c.api == api]

    def apis(self, prefix: str = "") -> list[str]:
        return [c.api for c in self.calls if c.api.startswith(prefix)]

    # ---- contexts ---------------------------------------------------------------------

    def stack(self) -> list[Any]:
        if not hasattr(self._stacks, "contexts"):
            self._stacks.contexts = []
        return self._stacks.contexts

    def current_context(self) -> Any:
        stack = self.stack()
        return stack[-1] if stack else None

    # ---- memory -----------------------------------------------------------------------

    def allocate(self, nbytes: int) -> int:
        with self._lock:
            if self.used_bytes + nbytes > self.total_bytes:
                raise MemoryError("fake GPU out of memory")
            address = next(self._addresses)
            self.memory[address] = bytearray(nbytes)
            return address

    def release(self, address: int) -> None:
        with self._lock:
            del self.memory[address]

    def buffer(self, address: int, nbytes: int) -> memoryview:
        """`nbytes` of device memory at `address`; an address that is not the start of an
        allocation large enough is a bug in the caller (real CUDA would corrupt memory)."""
        block = self.memory.get(address)
        if block is None:
            raise AssertionError(f"no device allocation at {address:#x}")
        if nbytes > len(block):
            raise AssertionError(
                f"access of {nbytes} bytes to a {len(block)}-byte allocation at {address:#x}"
            )
        return memoryview(block)[:nbytes]

    @property
    def used_bytes(self) -> int:
        return sum(len(b) for b in self.memory.values())
