"""Docker side of the disk watch: how much each running container wrote to its own filesystem.

A mixin of DockerBackend, like docker_data.py. The storage driver here
(fuse-overlayfs) has no size option, so a container's writable layer cannot be
capped by the engine; the worker watches it instead (workspaces/services/disk_watch.py)
and stops a workspace whose container passes its catalog limit. /data is a
volume, not part of the writable layer, and is never counted here.

The engine's own measure (SizeRw) is too dear to ask for every pass: with
fuse-overlayfs the engine compares the container's whole tree with its
image's, 1 to 11 s a container, all of it inside the daemon, which every
launch then waits behind (bench/disk_usage.py). So the worker reads where the
layer's files are (GraphDriver.Data.UpperDir, from a plain inspect: overlay2
and fuse-overlayfs) and adds up what is there itself, on the Docker host, as
`du -x` would: milliseconds for a usual container. SizeRw is asked for only
when the driver names no upper directory, or the worker cannot read it (then
once a process it says so in the log: the worker unit grants it
CAP_DAC_READ_SEARCH for this).

Everything in that directory was made by the student, so the walk trusts
nothing in it: it never follows a link (each directory is opened relative to
its parent with O_NOFOLLOW, so a directory swapped for a link mid-walk cannot
lead it out), never enters another filesystem, counts a file with several
names once, never decodes a name, is iterative (no recursion to exhaust), and
stops at a time, entry and depth bound. Stopped early, it reports what it
counted so far as a lower bound (ContainerDisk.complete False): the watch
stops the workspace if even that is over the limit, and otherwise treats it
as unmeasured, whose second pass in a row stops it too.

Sizes are allocated bytes (st_blocks * 512), not apparent sizes (st_size):
the limit protects the host's disk, and that is what a file takes from it. A
sparse file of 100 GB with nothing written in it takes nothing and does not
stop anyone; one whose holes are filled counts as it fills. (SizeRw adds up
apparent sizes, so it counted such a file at 100 GB.)
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from .base import ContainerDisk
from .docker_common import LABEL_CONTAINER, LABEL_ROLE, LABEL_WORKSPACE, translated
from .errors import EngineError

logger = logging.getLogger(__name__)

# Bounds of one container's walk. A usual desktop or IDE layer is a few
# thousand entries (a big node_modules a few hundred thousand), measured in
# well under a second; a student's million tiny files stop the walk here
# rather than hold the watch (and its lock) for minutes.
WALK_SECONDS = 5.0
WALK_ENTRIES = 1_000_000
# Directories open at once (two descriptors each): deeper nesting is left
# uncounted and makes the measure incomplete.
WALK_DEPTH = 128
# The display's socket folder should hold one socket: its walk is short.
SOCKET_FOLDER_SECONDS = 1.0

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Walked:
    """What a walk of a layer found: allocated bytes, and whether it saw everything."""

    allocated: int
    complete: bool


def allocated_bytes(
    root: str, seconds: float = WALK_SECONDS, entries: int = WALK_ENTRIES, depth: int = WALK_DEPTH
) -> Walked:
    """Bytes allocated under root (itself included), as `du -x --block-size=1` counts them.

    Links are never followed, other filesystems never entered, a file with
    several names is counted once. Stops after `seconds`, `entries` entries or
    below `depth` levels, with complete False and what it counted so far.
    OSError when root itself cannot be opened as a directory.
    """
    top = os.open(root, _DIRECTORY)
    return _LayerWalk(time.monotonic() + seconds, entries, depth).run(top)


class _LayerWalk:
    def __init__(self, deadline: float, entries: int, depth: int) -> None:
        self.deadline = deadline
        self.entries_left = entries
        self.depth = depth
        self.total = 0
        self.complete = True
        # Files with several names already counted: their inode, or (st_dev, st_ino)
        # off the layer's device; plain ints keep a million of them small.
        self.seen: set[int | tuple[int, int]] = set()
        self.device = 0

    def run(self, top: int) -> Walked:
        """Walk from the open directory top (closed here), depth first, without recursion."""
        stack: list[tuple[int, Any]] = []
        try:
            top_stat = os.fstat(top)
            self.device = top_stat.st_dev
            self.total += top_stat.st_blocks * 512
            self._enter(stack, top)
            while stack and self.complete:
                self._step(stack)
        finally:
            for fd, entries in stack:
                entries.close()
                os.close(fd)
        return Walked(self.total, self.complete)

    def _enter(self, stack: list[tuple[int, Any]], fd: int) -> None:
        try:
            entries = os.scandir(fd)
        except OSError:
            os.close(fd)
            self.complete = False
            return
        stack.append((fd, entries))

    def _step(self, stack: list[tuple[int, Any]]) -> None:
        """Count the next entry of the innermost directory; enter it if it is a directory."""
        fd, entries = stack[-1]
        try:
            entry = next(entries, None)
        except OSError:  # the directory went bad under us: what is left of it is not counted
            entry, self.complete = None, False
        if entry is None:
            stack.pop()
            entries.close()
            os.close(fd)
            return
        self.entries_left -= 1
        if self.entries_left < 0 or time.monotonic() > self.deadline:
            self.complete = False
            return
        directory = self._count(entry)
        if not directory:
            return
        if len(stack) >= self.depth:
            self.complete = False
            return
        child = self._open_directory(fd, entry.name)
        if child is not None:
            self._enter(stack, child)

    def _count(self, entry: os.DirEntry) -> bool:
        """Add the entry's allocated bytes; True if it is a directory of this filesystem to enter."""
        try:
            # fstatat relative to the directory's descriptor, not following a link.
            info = entry.stat(follow_symlinks=False)
        except OSError:  # removed meanwhile: nothing to count
            return False
        is_directory = stat.S_ISDIR(info.st_mode)
        if is_directory and info.st_dev != self.device:
            return False  # a mount point: another filesystem, not this layer
        if not is_directory and info.st_nlink > 1:
            inode = info.st_ino if info.st_dev == self.device else (info.st_dev, info.st_ino)
            if inode in self.seen:
                return False
            self.seen.add(inode)
        self.total += info.st_blocks * 512
        return is_directory

    def _open_directory(self, parent: int, name: str | bytes) -> int | None:
        """The named directory of parent opened without following a link; None if it no longer is one."""
        try:
            fd = os.open(name, _DIRECTORY, dir_fd=parent)
        except OSError:  # replaced by a link or a file, or removed, since it was listed
            return None
        if os.fstat(fd).st_dev != self.device:
            os.close(fd)
            return None
        return fd


_unreadable_logged = False


def _upper_dir(inspected: dict) -> str | None:
    """The container's writable layer on the host, as the storage driver names it, or None."""
    driver = inspected.get("GraphDriver") or {}
    upper = (driver.get("Data") or {}).get("UpperDir")
    return upper if isinstance(upper, str) and os.path.isabs(upper) else None


class DockerUsageOps:
    """container_disk_usage for DockerBackend."""

    api: docker.APIClient
    _filters: Any
    _socket_dir: Any

    # The longest one container's measure takes: its walk, then the socket folder's.
    walk_seconds = WALK_SECONDS
    socket_folder_seconds = SOCKET_FOLDER_SECONDS

    def container_disk_usage(
        self, seconds: float | None = None, first: Collection[str] = ()
    ) -> list[ContainerDisk]:
        deadline = None if seconds is None else time.monotonic() + seconds
        rows = []
        for row in self._running_rows():
            labels = row.get("Labels") or {}
            if LABEL_WORKSPACE in labels and LABEL_CONTAINER in labels:
                key = ContainerDisk(labels[LABEL_WORKSPACE], labels[LABEL_CONTAINER], None).key
                rows.append((key not in first, row["Id"], labels))
        rows.sort(key=lambda item: item[0])  # stable: the others keep the engine's order
        measured = []
        for _, container_id, labels in rows:
            ws, name = labels[LABEL_WORKSPACE], labels[LABEL_CONTAINER]
            # A measure is started only if it ends by the deadline, whatever the student did.
            if deadline is not None and deadline - time.monotonic() < self._longest_measure():
                measured.append(ContainerDisk(ws, name, None, complete=False, reached=False))
                continue
            try:
                written, complete = self._measure(container_id)
            except _Gone:
                continue
            sockets = self._socket_folder_bytes(ws) if labels.get(LABEL_ROLE) == "display" else None
            measured.append(ContainerDisk(ws, name, written, complete, sockets))
        return measured

    def _longest_measure(self) -> float:
        return self.walk_seconds + self.socket_folder_seconds

    def _socket_folder_bytes(self, workspace_id: str) -> int | None:
        """Bytes in the display's socket folder, or None when it cannot be read.

        The folder is on the host (bind-mounted into the display) and the
        student can write in it, outside the layer walked above. It should
        hold one socket: a short walk is enough, and an incomplete one still
        counts what it saw, a lower bound the watch compares with its small limit.
        """
        try:
            return allocated_bytes(
                self._socket_dir(workspace_id), seconds=self.socket_folder_seconds
            ).allocated
        except OSError as exc:
            logger.warning(
                "disk watch: display socket folder of workspace %s not measured: %s", workspace_id, exc
            )
            return None

    def _running_rows(self) -> list[dict]:
        running = {**self._filters(), "status": ["running"]}
        with translated("Listing the running containers"):
            return self.api.containers(filters=running)

    def _measure(self, container_id: str) -> tuple[int | None, bool]:
        """(bytes written, complete): walked in its upper directory, or the engine's SizeRw."""
        upper = self._upper_dir_of(container_id)
        if upper is not None:
            try:
                walked = allocated_bytes(upper, seconds=self.walk_seconds)
            except OSError as exc:
                _log_unreadable(exc)
            else:
                return walked.allocated, walked.complete
        return self._engine_written(container_id), True

    def _upper_dir_of(self, container_id: str) -> str | None:
        try:
            with translated("Inspecting a container"):
                return _upper_dir(self.api.inspect_container(container_id))
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                raise _Gone from exc
            logger.warning("disk watch: container %s not inspected: %s", container_id[:12], exc)
            return None

    def _engine_written(self, container_id: str) -> int | None:
        """Bytes the engine says the container wrote (SizeRw); None when it could not measure it."""
        try:
            with translated("Measuring a container's disk use"):
                rows = self.api.containers(all=True, size=True, filters={"id": [container_id]})
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                raise _Gone from exc
            logger.warning("disk watch: container %s not measured: %s", container_id[:12], exc)
            return None
        if not rows:
            raise _Gone
        return int(rows[0].get("SizeRw") or 0)


def _log_unreadable(exc: OSError) -> None:
    """Say once a process why the engine is measuring (slowly) instead of the worker."""
    global _unreadable_logged
    if not _unreadable_logged:
        _unreadable_logged = True
        logger.warning(
            "disk watch: cannot read the containers' layers (%s); asking the engine instead, "
            "which is far slower. Run the worker as root or with CAP_DAC_READ_SEARCH.",
            exc.strerror,
        )


class _Gone(Exception):
    """The container went away between the list and its measure."""
