"""The contract every engine backend keeps, and the errors it raises.

A backend turns a WorkspaceSpec into running containers and reports what the
engine really has. It never decides anything: timeouts, retrying work and
the database live above it. (Backends may try a call that is safe to repeat
again when the engine only stumbled: docker's do, engine/retries.py.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from .errors import (  # noqa: F401  (re-exported: callers import errors from here)
    ContainerNotFound,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    InvalidSpecError,
    StartFailed,
    StartTimeout,
)
from .specs import ContainerState, Endpoint, WorkspaceSpec

Progress = Callable[[int, str], None]

# Workspace states as poll() and list_workspaces() report them.
RUNNING = "running"
STOPPED = "stopped"
MISSING = "missing"
FAILED = "failed"


@dataclass(frozen=True)
class ContainerDisk:
    """What one running container wrote to its own filesystem (never its volumes, so never /data)."""

    workspace_id: str
    container: str  # the spec name ("display", "ide")
    written: int | None  # bytes; None when the engine could not measure it
    # False: the measure stopped at its bound, so written is only a lower bound.
    complete: bool = True
    # The display's socket folder (a host folder the student can write in,
    # outside the layer): bytes in it; None for other containers.
    socket_folder: int | None = None
    # False: the pass's deadline came first, nothing was measured (see
    # container_disk_usage); the next pass measures it first.
    reached: bool = True

    @property
    def key(self) -> str:
        """Who this is, across passes: "<workspace id>:<container>"."""
        return f"{self.workspace_id}:{self.container}"


@dataclass(frozen=True)
class LegacyVolume:
    """A data volume named by username, from before volumes were keyed by id."""

    name: str
    username: str | None  # None when neither its label nor its name says whose it was
    created: datetime | None
    migrated_to: str | None  # the id-keyed volume made from it, if any


def no_progress(percent: int, message: str) -> None:
    """The default progress callback: ignore it."""


class Backend(ABC):
    @abstractmethod
    def start(self, spec: WorkspaceSpec, progress: Progress = no_progress, timeout: float = 60) -> Endpoint:
        """Create what is missing, start everything, return once the display answers."""

    @abstractmethod
    def stop(self, workspace_id: str) -> None:
        """Stop the containers but keep them (their filesystems survive). Idempotent."""

    @abstractmethod
    def remove(self, workspace_id: str) -> None:
        """Remove containers, network and X socket volume; never the data volume. Idempotent."""

    @abstractmethod
    def poll(self, workspace_id: str) -> str:
        """The workspace state from the engine itself: running, stopped, missing or failed."""

    @abstractmethod
    def containers(self, workspace_id: str) -> list[ContainerState]:
        """The workspace's containers, display first."""

    @abstractmethod
    def endpoint(self, workspace_id: str) -> Endpoint | None:
        """Where the display answers, or None when it is not running."""

    @abstractmethod
    def list_workspaces(self) -> dict[str, str]:
        """Every workspace the engine has under this prefix, by id, with its poll state."""

    @abstractmethod
    def image_labels(self, image: str) -> dict[str, str]:
        """The labels of one image; ImageNotFound when it is not there."""

    @abstractmethod
    def list_images(self) -> list[dict[str, Any]]:
        """Lattice images: name, reference, tags, id, size, created, labels."""

    # The admin catalog's images: DockerCatalogOps (docker_catalog.py) for docker.

    @abstractmethod
    def build(
        self,
        context: bytes | BinaryIO,
        reference: str,
        log: Callable[[str], None],
        buildargs: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        memory: str | int = "2g",
        cpus: int = 1,
        timeout: float = 1800,
    ) -> dict[str, Any]:
        """Build ``reference`` from a tar context (build_context.py), calling ``log`` with each
        line; {"id", "size", "labels"}. BuildFailed names the failing step.

        Each step gets ``memory`` and ``cpus``; the whole build gets ``timeout`` seconds."""

    @abstractmethod
    def pull(self, reference: str, progress: Progress, *, timeout: float = 1800) -> dict[str, Any]:
        """Pull ``reference`` from its registry, reporting a percent that never goes backwards;
        {"id", "size", "labels"}. ImageNotFound when the registry has no such image."""

    @abstractmethod
    def tag(self, source: str, reference: str) -> None:
        """Give the image ``source`` the name ``reference`` too; ImageNotFound when it is not there."""

    @abstractmethod
    def image_exists(self, reference: str) -> bool:
        """Whether the engine has an image called ``reference``."""

    @abstractmethod
    def exec(self, workspace_id: str, container: str, cmd: list[str]) -> tuple[int, bytes]:
        """Run cmd as the workspace user in a running container; exit code and output."""

    @abstractmethod
    def set_vnc_passwords(self, workspace_id: str, password: str, view_password: str) -> None:
        """Give a running display new VNC passwords at once; the old ones open nothing after.

        DockerDisplayOps (docker_display.py) for docker."""

    # Saving containers and moving files: DockerDataOps (docker_data.py) for docker.

    @abstractmethod
    def diff(self, workspace_id: str, container: str) -> list[dict[str, str]]:
        """What the container changed in its own filesystem: [{"path", "kind": added|changed|deleted}]."""

    @abstractmethod
    def commit(
        self, workspace_id: str, container: str, reference: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        """Save the container's filesystem as image reference; {"id", "reference", "size"}."""

    @abstractmethod
    def image_size(self, reference: str) -> int:
        """Bytes of the image with its parents; ImageNotFound when it is not there."""

    @abstractmethod
    def remove_image(self, reference: str) -> None:
        """Remove one image tag; a missing image is success, one in use is an EngineError."""

    @abstractmethod
    def copy_data(self, src_owner: int, src_path: str, dst_owner: int, dst_path: str) -> list[dict[str, str]]:
        """Copy a folder of one user's data volume into another's (owners are user ids),
        replacing nothing; regular files only: links, pipes, sockets, devices are listed
        as skipped, never followed."""

    # The data volume as a whole (backups to object storage): DockerVolumeOps for docker.
    # A data volume is named by its owner's user id (names.data_volume).

    @abstractmethod
    def data_volume_exists(self, owner: int) -> bool:
        """Does the engine have this owner's data volume, whole? One whose
        import_data was cut short (a killed worker) counts as missing."""

    @abstractmethod
    def export_data(self, owner: int, out: BinaryIO) -> None:
        """Write a tar of the owner's whole data volume to ``out``."""

    @abstractmethod
    def import_data(self, owner: int, tar: BinaryIO, migrated_from: str = "") -> None:
        """Unpack such a tar into the owner's data volume, making it if missing; symlinks
        stay links wherever they point. ``migrated_from`` names the old volume it came from.

        When it fails, the volume is as missing as before: removed if this
        call made it, else still counted as missing by data_volume_exists."""

    @abstractmethod
    def legacy_data_volumes(self) -> list[LegacyVolume]:
        """Data volumes named by username (before ids), each a LegacyVolume."""

    @abstractmethod
    def export_legacy_data(self, name: str, out: BinaryIO) -> None:
        """Write a tar of one such volume to ``out``."""

    def ensure_egress(self) -> bool:
        """Put back the apps' egress rules if they went away; True when it had to.

        EngineError when they cannot be put back. Nothing to do for an engine
        whose site firewall keeps the workspaces off the host and private networks.
        """
        return False

    # Disk use: DockerUsageOps (docker_usage.py) for docker.

    @abstractmethod
    def container_disk_usage(
        self, seconds: float | None = None, first: Collection[str] = ()
    ) -> list[ContainerDisk]:
        """Bytes each running container under this prefix wrote to its own filesystem.

        Slow (the engine measures every container): call it rarely. With
        ``seconds``, no measure starts that could end after them: the
        containers left are returned with reached False. Those whose key
        is in ``first`` are measured before the others."""
