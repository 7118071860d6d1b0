"""Plain data the engine takes and gives back. No Django, no docker."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import InvalidSpecError

ROLES = ("display", "app")
# Container names become hostnames and part of docker names: keep them to
# what a DNS label allows (a catalog slug fits).
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_GEOMETRY = re.compile(r"^[0-9]{3,4}x[0-9]{3,4}$")
_SIZE = re.compile(r"^([0-9]+)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Docker reads 0 as "no limit" for memory, CPUs and pids (and -1 for pids):
# every limit has a floor, so no catalog entry can ever mean "unlimited".
MIN_MEMORY = 64 * 1024**2
MIN_PIDS = 32
MAX_PIDS = 65536
MAX_CPUS = 64


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


def size_bytes(text: object) -> int:
    """Bytes in a size such as "512m" or "2g"; InvalidSpecError when it is not one."""
    match = _SIZE.match(str(text).strip())
    if match is None:
        raise InvalidSpecError(f"{text!r} is not a size: use a number with b, k, m or g, such as 512m or 2g.")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def max_cpus() -> int:
    """No container gets more CPUs than this host has (Docker refuses it), nor more than 64."""
    return max(1, min(MAX_CPUS, os.cpu_count() or MAX_CPUS))


def limit_problems(mem_limit: object, cpus: object, pids_limit: object) -> dict[str, str]:
    """What is wrong with a set of limits, by field: the one check that labels, the
    admin API and page and every workspace start go through. Empty when they are fine."""
    problems = {}
    try:
        if size_bytes(mem_limit) < MIN_MEMORY:
            problems["mem_limit"] = f"Memory {mem_limit!r} is too small: at least 64m (0 is not 'unlimited')."
    except InvalidSpecError as exc:
        problems["mem_limit"] = f"Memory: {exc}"
    try:
        number = float(cpus)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(cpus, bool) or not 0 < number <= max_cpus():
        problems["cpus"] = f"CPUs {cpus!r}: more than 0 and at most {max_cpus()} (this host's CPUs)."
    try:
        whole = int(str(pids_limit).strip()) if not isinstance(pids_limit, bool) else -1
    except ValueError:
        whole = -1
    if not MIN_PIDS <= whole <= MAX_PIDS:
        problems["pids_limit"] = (
            f"Process limit {pids_limit!r}: a whole number from {MIN_PIDS} to {MAX_PIDS}."
        )
    return problems


@dataclass(frozen=True)
class Limits:
    mem_limit: str = "1g"
    cpus: float = 1.0
    pids_limit: int = 256
    shm_size: str = "256m"

    def __post_init__(self) -> None:
        problems = limit_problems(self.mem_limit, self.cpus, self.pids_limit)
        if problems:
            raise InvalidSpecError(" ".join(problems.values()))
        size_bytes(self.shm_size)


@dataclass(frozen=True)
class ContainerSpec:
    name: str  # unique in the workspace: "display", "ide", a catalog slug
    image: str
    role: str = "app"  # "display" | "app"
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    # Replaces the image's CMD; tests use it, the portal normally does not.
    command: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidSpecError(f"bad container name {self.name!r}: lowercase letters, digits and '-'")
        if self.role not in ROLES:
            raise InvalidSpecError(f"bad role {self.role!r}: one of {ROLES}")
        if not self.image:
            raise InvalidSpecError(f"container {self.name!r} has no image")
        object.__setattr__(self, "env", _frozen(self.env))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))

    def __hash__(self) -> int:
        return hash(
            (self.name, self.image, self.role, self.limits, tuple(sorted(self.env.items())), self.command)
        )


@dataclass(frozen=True)
class WorkspaceSpec:
    workspace_id: str
    owner: str  # the username, for labels; the data volume goes by owner_id
    display: ContainerSpec
    apps: tuple[ContainerSpec, ...] = ()
    vnc_password: str = ""
    vnc_view_password: str = ""
    kiosk: bool = False
    geometry: str = "1280x800"
    # The owner's stable id: it names their data volume (names.data_volume).
    owner_id: int = 0
    # False: the apps' network has no route out at all (an exam, an image
    # without internet). True still never reaches the host, private ranges or
    # another workspace (egress.py).
    internet: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace_id", str(self.workspace_id))
        if isinstance(self.owner_id, bool) or not isinstance(self.owner_id, int) or self.owner_id < 1:
            raise InvalidSpecError("a workspace needs its owner's id: it names their data volume")
        object.__setattr__(self, "apps", tuple(self.apps))
        if not self.workspace_id or not self.owner:
            raise InvalidSpecError("a workspace needs an id and an owner")
        if self.display.role != "display":
            raise InvalidSpecError("the display container must have role 'display'")
        names = [self.display.name, *(a.name for a in self.apps)]
        if len(set(names)) != len(names):
            raise InvalidSpecError(f"container names must be unique in a workspace: {names}")
        if any(a.role != "app" for a in self.apps):
            raise InvalidSpecError("apps must have role 'app'")
        if not _GEOMETRY.match(self.geometry):
            raise InvalidSpecError(f"bad geometry {self.geometry!r}: use WIDTHxHEIGHT")
        for password in (self.vnc_password, self.vnc_view_password):
            # vncpasswd -f reads one password a line.
            if "\n" in password or "\r" in password or "\0" in password:
                raise InvalidSpecError("VNC passwords cannot hold line breaks or NUL")

    @property
    def containers(self) -> tuple[ContainerSpec, ...]:
        return (self.display, *self.apps)


@dataclass(frozen=True)
class Endpoint:
    """Where the display's VNC server answers: a unix socket on the engine's host.

    The display has no network at all; only processes on the Docker host that
    may open this path (the display proxy, the worker) can reach it.
    The student can write in the socket's folder, so the path alone proves
    nothing: whoever connects insists that the listener is process
    ``server_pid`` of container ``container_id`` (workspaces/display/sockets.py).
    """

    path: str
    container_id: str  # the display container's full id
    server_pid: int  # the VNC server's pid on the engine's host, as it started

    def as_dict(self) -> dict[str, str | int]:
        return {"path": self.path, "container_id": self.container_id, "server_pid": self.server_pid}


@dataclass(frozen=True)
class ContainerState:
    name: str  # the spec name ("display", "ide"), not the docker name
    image: str
    state: str  # "running" | "stopped" | "created" | "restarting" | "paused" | "failed" | "missing"
