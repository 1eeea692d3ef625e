"""A memory cap on a group of processes, for benchmarks: a child of this process's own memory
cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`), so that it only narrows what this
process may already use; the children of a process in it are born in it. Past the cap the
kernel reclaims what it can, then kills a process of the group (the OOM killer), which the
group's counters record.

A process moved in is charged only for what it allocates from then on (Linux no longer moves
a process's charges with it: v1's `move_charge_at_immigrate` is refused since 6.x, and v2
never did), so a process is best started in the group: `holding_this_process`.

Not every machine lets a benchmark do this (a container without a writable cgroup tree):
`MemoryCap.create` then says why, and the caller reports it."""

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class _Files:
    """The names of one cgroup version's files."""

    limit: str


V1 = _Files("memory.limit_in_bytes")
V2 = _Files("memory.max")


class CapUnavailable(Exception):
    """Why no memory cgroup could be made here."""


@dataclass(frozen=True)
class MemoryCap:
    path: Path
    files: _Files
    limit_bytes: int

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> "MemoryCap":
        """A fresh cgroup under this process's own memory cgroup, capped at `limit_bytes`."""
        own = _own_memory_cgroup()
        path = own[0] / f"{name}-{uuid.uuid4().hex[:6]}"
        try:
            path.mkdir()
            cap = cls(path, own[1], limit_bytes)
            cap._write(cap.files.limit, str(limit_bytes))
        except OSError as error:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise CapUnavailable(f"cannot make a memory cgroup in {own[0]}: {error}") from None
        return cap

    @contextlib.contextmanager
    def holding_this_process(self) -> Iterator[None]:
        """This process in the group meanwhile, so that what it starts is born there."""
        self._write("cgroup.procs", str(os.getpid()))
        try:
            yield
        finally:
            (self.path.parent / "cgroup.procs").write_text(str(os.getpid()))

    def resident(self) -> int:
        """The group's resident memory now: its anonymous pages and the file pages mapped into
        its processes (shared libraries), not the page cache it may be reclaimed down to."""
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        if self.files is V1:
            return int(stat["total_rss"]) + int(stat["total_mapped_file"])
        return int(stat["anon"]) + int(stat["file_mapped"])

    def oom_kills(self) -> int:
        """Processes of the group the kernel killed for want of memory under the cap."""
        if self.files is V1:
            for line in (self.path / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
            return 0
        for line in (self.path / "memory.events").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        """The group gone, its processes (if any are left) back in the parent's."""
        parent = self.path.parent / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                parent.write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)


def _own_memory_cgroup() -> tuple[Path, _Files]:
    """This process's memory cgroup directory and its version's file names."""
    lines = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = ROOT / "memory" / path.lstrip("/")
            if directory.is_dir():
                return directory, V1
    for line in lines:
        if line.startswith("0::"):
            directory = ROOT / line[3:].lstrip("/")
            if (directory / "memory.max").exists() or (
                directory / "cgroup.subtree_control"
            ).exists():
                return directory, V2
    raise CapUnavailable("no memory cgroup controller is mounted under /sys/fs/cgroup")
