"""Open a display's VNC socket without trusting anything a student controls.

A display's socket folder is bind-mounted into the display container, where
the student's own processes (xterm, the file manager) run as the same uid as
Xvnc: whatever lies in that folder may have been put there by the student: a
symlink to a host socket (the Docker engine's, Redis's), a socket of their own
listener. Every reader of a display socket (the display proxy, the worker's
thumbnails, the engine's readiness probe, the benchmarks) connects through
``open_display`` alone, which:

- opens the socket root and the workspace's folder with O_NOFOLLOW, the
  folder by one plain name relative to the root, so no link anywhere on the
  path is followed;
- opens ``vnc.sock`` itself with O_PATH|O_NOFOLLOW and refuses anything but a
  socket, then connects through that very file (``/proc/self/fd/N``): a link
  swapped in after the check is never followed either;
- reads the listener's credentials (SO_PEERCRED) before a byte is sent and
  refuses unless it is the display's VNC server: uid 1000, the process id the
  engine recorded when the display started, and a process of the display's
  container by its cgroup (so a recycled pid elsewhere does not pass).

A refusal is ``DisplayRefused`` (a ConnectionError, so callers that handle a
dead display handle it too); its message never holds a token.
No Django here: the display proxy imports it.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SOCKET_NAME = "vnc.sock"
DISPLAY_UID = 1000  # every workspace container runs as this user
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
# A container's id in a cgroup path: /docker/<id> (cgroupfs driver, v1 or v2)
# or docker-<id>.scope (systemd driver). The innermost one counts (Docker in Docker).
_ID_IN_CGROUP = re.compile(r"(?:^|/)(?:docker[-/])?([0-9a-f]{64})(?:\.scope)?(?=/|$)")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class DisplayRefused(ConnectionError):
    """What answers (or lies) at the display's socket is not this workspace's VNC server."""


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int


@dataclass(frozen=True)
class DisplayTarget:
    """One display's socket: ``<socket_root>/<folder>/vnc.sock``, served by ``server_pid`` of ``container_id``."""

    socket_root: str
    folder: str
    container_id: str
    server_pid: int

    def __post_init__(self) -> None:
        check_location(self.socket_root, self.folder)
        if not _CONTAINER_ID.match(self.container_id or ""):
            raise DisplayRefused(
                "the display's container is not known (it started before this version of Lattice): "
                "stop the workspace and start it again"
            )
        if isinstance(self.server_pid, bool) or not isinstance(self.server_pid, int) or self.server_pid < 1:
            raise DisplayRefused(
                "the display's VNC server is not known: stop the workspace and start it again"
            )

    @property
    def path(self) -> str:
        return os.path.join(self.socket_root, self.folder, SOCKET_NAME)

    @classmethod
    def from_path(cls, path: str, container_id: str, server_pid: int) -> DisplayTarget:
        folder_path, name = os.path.split(path)
        if name != SOCKET_NAME:
            raise DisplayRefused(f"a display socket is called {SOCKET_NAME}")
        root, folder = os.path.split(folder_path)
        return cls(root, folder, container_id, server_pid)

    @classmethod
    def from_endpoint(cls, endpoint: Mapping[str, Any]) -> DisplayTarget:
        """From an endpoint as the engine reports it and the portal stores it (engine_state)."""
        return cls.from_path(
            str(endpoint.get("path") or ""),
            endpoint.get("container_id") or "",
            endpoint.get("server_pid") or 0,
        )


def check_location(socket_root: str, folder: str) -> None:
    """The root must be absolute; the folder one plain name in it (no '/', '..', NUL)."""
    if not socket_root or not os.path.isabs(socket_root) or "\0" in socket_root:
        raise DisplayRefused("the display socket root must be an absolute path")
    if not folder or folder in (".", "..") or "/" in folder or "\0" in folder:
        raise DisplayRefused("a display's socket folder must be one plain name in the socket root")


def open_display(target: DisplayTarget, timeout: float) -> socket.socket:
    """A connected socket to the display's own VNC server, checked before anything is sent."""
    sock = _connect_in_folder(target.socket_root, target.folder, timeout)
    try:
        check_peer(peer_of(sock), target.container_id, target.server_pid)
    except BaseException:
        sock.close()
        raise
    return sock


def probe(socket_root: str, folder: str, container_id: str, timeout: float) -> int | None:
    """The pid of the container's process that serves RFB in the folder now, or None.

    The engine calls it while a display starts, before any student process
    runs in it, and records the pid that ``open_display`` later insists on.
    """
    try:
        with _connect_in_folder(socket_root, folder, timeout) as sock:
            peer = peer_of(sock)
            check_peer(peer, container_id, None)
            return peer.pid if sock.recv(4) == b"RFB " else None
    except OSError:
        return None


def _connect_in_folder(socket_root: str, folder: str, timeout: float) -> socket.socket:
    check_location(socket_root, folder)
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fds: list[int] = []
    try:
        try:
            fds.append(os.open(socket_root, flags | os.O_DIRECTORY))
            fds.append(os.open(folder, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
            fds.append(os.open(SOCKET_NAME, flags, dir_fd=fds[-1]))
        except FileNotFoundError:
            raise
        except OSError as exc:
            # ELOOP/ENOTDIR: a link or a file where a folder should be.
            raise DisplayRefused(
                f"the display's socket folder is not a plain folder ({exc.strerror})"
            ) from None
        mode = os.fstat(fds[-1]).st_mode
        if not stat.S_ISSOCK(mode):
            raise DisplayRefused(f"the display's {SOCKET_NAME} is not a socket (mode {stat.filemode(mode)})")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            # Through the file just checked: the kernel does not look the name up again.
            sock.connect(f"/proc/self/fd/{fds[-1]}")
        except BaseException:
            sock.close()
            raise
        return sock
    finally:
        for fd in fds:
            os.close(fd)


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Peer(pid=pid, uid=uid)


def check_peer(peer: Peer, container_id: str, server_pid: int | None) -> None:
    """DisplayRefused unless the peer is uid 1000, ``server_pid`` (when given), in ``container_id``."""
    if peer.uid != DISPLAY_UID:
        raise DisplayRefused(f"the display socket's listener runs as uid {peer.uid}, not {DISPLAY_UID}")
    if server_pid is not None and peer.pid != server_pid:
        raise DisplayRefused(
            f"the display socket's listener is process {peer.pid}, not the display's VNC server"
        )
    found = container_of(peer.pid)
    if found != container_id:
        raise DisplayRefused(
            f"the display socket's listener (process {peer.pid}) is not in the display's container"
        )


def container_of(pid: int) -> str | None:
    """The container a host process runs in, by its cgroup; None for none."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as fh:
            return container_in(fh.read())
    except OSError:
        return None


def container_in(cgroup: str) -> str | None:
    """The container id that a /proc/<pid>/cgroup text names; None for none, or for disagreeing lines."""
    ids = set()
    for line in cgroup.splitlines():
        matches = _ID_IN_CGROUP.findall(line.split(":", 2)[-1])
        if matches:
            ids.add(matches[-1])
    # Hierarchies that name a container must agree; a container process cannot
    # move itself (its cgroup file system is read-only), and a host process names none.
    return ids.pop() if len(ids) == 1 else None
