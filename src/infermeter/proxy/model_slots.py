"""The `model` label slots of the whole sidecar, shared by every proxy worker.

`--max-models` bounds the series of the whole sidecar, not of each worker, and a model must
get the same label in every worker. The slots live in one small append-only file the
supervisor creates and every worker inherits: records of (length, UTF-8 name). Claiming
takes a POSIX record lock (per process, unlike flock, which the inherited descriptor would
share) and appends; reading needs no lock (a record is written whole before the next read
can see it, and a torn tail is left for the next read). Each worker caches what it has read,
and once the file holds `capacity` names no new name can get in, so a flood of unknown
names costs no system call at all.
"""

from __future__ import annotations

import fcntl
import os
import struct
import tempfile
import threading
from collections.abc import Iterable

_LENGTH = struct.Struct("<H")
_READ = 1 << 16


_FILE_LOCKS: dict[tuple[int, int], threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(fd: int) -> threading.Lock:
    """One lock per table file in this process, shared by every `ModelSlots` on it: lockf
    excludes processes, not threads, and the tests' in-process sidecar runs its workers'
    tables (duplicated descriptors) on threads of one process."""
    info = os.fstat(fd)
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault((info.st_dev, info.st_ino), threading.Lock())


class ModelSlots:
    def __init__(self, fd: int, capacity: int, fixed: bool = False) -> None:
        """`fixed`: the table holds an operator's allow-list; nothing else gets a slot."""
        self.fd = fd
        self.capacity = capacity
        self.fixed = fixed
        self._known: set[str] = set()
        self._offset = 0
        self._read_all = False  # a full table, once read whole, never changes again
        self._thread_lock = _file_lock(fd)

    @classmethod
    def create(cls, capacity: int, fixed: Iterable[str] = ()) -> ModelSlots:
        """A fresh table in an unlinked temporary file (inheritable by workers); with
        `fixed` names, it holds those and only those."""
        with tempfile.TemporaryFile(prefix="infermeter-models-") as handle:
            slots = cls(os.dup(handle.fileno()), capacity)
        names = list(dict.fromkeys(fixed))
        if names:
            slots.capacity = max(capacity, len(names))
            for name in names:
                slots.claim(name)
            slots.fixed = True
        return slots

    def __contains__(self, name: object) -> bool:
        """Known to this process already (no system call)."""
        return name in self._known

    @property
    def full(self) -> bool:
        return self.fixed or len(self._known) >= self.capacity

    def known(self, name: str) -> bool:
        """Has `name` a slot (in any worker)?"""
        if name in self._known:
            return True
        if self.full and self._read_all:
            return False
        self._refresh()
        return name in self._known

    def claim(self, name: str) -> bool:
        """Give `name` a slot if one is free; True if it has one now."""
        if self.known(name) or self.full:
            return name in self._known
        with self._thread_lock:  # lockf excludes processes, not this process's threads
            return self._claim_locked(name)

    def _claim_locked(self, name: str) -> bool:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            self._refresh()
            if name in self._known or self.full:
                return name in self._known
            data = name.encode()
            record = _LENGTH.pack(len(data)) + data
            os.pwrite(self.fd, record, self._offset)
            self._offset += len(record)
            self._known.add(name)
            return True
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def names(self) -> list[str]:
        self._refresh()
        return sorted(self._known)

    def _refresh(self) -> None:
        while True:
            data = os.pread(self.fd, _READ, self._offset)
            at = 0
            while at + _LENGTH.size <= len(data):
                (length,) = _LENGTH.unpack_from(data, at)
                end = at + _LENGTH.size + length
                if end > len(data):
                    break  # torn tail (or the end of this read): read again from here
                self._known.add(data[at + _LENGTH.size : end].decode())
                at = end
            self._offset += at
            if len(data) < _READ or at == 0:
                self._read_all = self.full
                return

    def close(self) -> None:
        os.close(self.fd)


class SharedCap:
    """`LabelCap`'s interface over shared slots: the value itself, or `overflow` once full.

    For the `--attribute` labels: their cap, like the model's, holds for the whole sidecar.
    """

    __slots__ = ("overflow", "slots")

    def __init__(self, slots: ModelSlots, overflow: str) -> None:
        self.slots = slots
        self.overflow = overflow

    def __call__(self, value: str) -> str:
        return value if self.slots.claim(value) else self.overflow

    def __len__(self) -> int:
        return len(self.slots.names())
