"""Plain data the engine takes and gives back. No Django, no docker."""

from __future__ import annotations

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
_SIZE = re.compile(r"^[0-9]+[bkmg]?$", re.IGNORECASE)


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Limits:
    mem_limit: str = "1g"
    cpus: float = 1.0
    pids_limit: int = 256
    shm_size: str = "256m"

    def __post_init__(self) -> None:
        for what in (self.mem_limit, self.shm_size):
            if not _SIZE.match(str(what)):
                raise InvalidSpecError(f"bad size {what!r}: use a number with b, k, m or g")
        if not 0 < self.cpus <= 64:
            raise InvalidSpecError(f"bad cpus {self.cpus!r}")
        if not 16 <= self.pids_limit <= 65536:
            raise InvalidSpecError(f"bad pids_limit {self.pids_limit!r}")


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
    owner: str  # the username; its data volume is shared by all its workspaces
    display: ContainerSpec
    apps: tuple[ContainerSpec, ...] = ()
    vnc_password: str = ""
    vnc_view_password: str = ""
    kiosk: bool = False
    geometry: str = "1280x800"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace_id", str(self.workspace_id))
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
    ``server_pid`` of container ``container_id`` (workspaces/display_socket.py).
    """

    path: str
    container_id: str = ""  # the display container's full id
    server_pid: int = 0  # the VNC server's pid on the engine's host, as it started

    def as_dict(self) -> dict[str, str | int]:
        return {"path": self.path, "container_id": self.container_id, "server_pid": self.server_pid}


@dataclass(frozen=True)
class ContainerState:
    name: str  # the spec name ("display", "ide"), not the docker name
    image: str
    state: str  # "running" | "stopped" | "created" | "restarting" | "paused" | "failed" | "missing"
