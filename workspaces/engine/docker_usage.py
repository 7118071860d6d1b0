"""Docker side of the disk watch: how much each running container wrote to its own filesystem.

A mixin of DockerBackend, like docker_data.py. The storage driver here
(fuse-overlayfs) has no size option, so a container's writable layer cannot be
capped by the engine; the worker watches it instead (workspaces/disk_watch.py)
and stops a workspace whose container passes its catalog limit. /data is a
volume, not part of the writable layer, and is never counted here.

Sizes are the engine's own (SizeRw). With fuse-overlayfs the engine finds
them by comparing the container's whole tree with its image's: about 1 s a
small container on a quiet 2-core machine, 11 s a desktop one with the
machine busy (bench/disk_usage.py); overlay2 reads only the container's
upper layer, far cheaper. One list call with sizes for ten busy displays
outlasted the client's 60 s timeout, so containers are measured one
by one: each call stays short, one that went away is skipped, one the engine
could not measure is reported as such (written None: disk_watch.py decides),
and the engine is never asked to walk everything at once.
"""

from __future__ import annotations

import logging
from typing import Any

import docker
import docker.errors

from .base import ContainerDisk
from .errors import EngineError

logger = logging.getLogger(__name__)


class DockerUsageOps:
    """container_disk_usage for DockerBackend."""

    api: docker.APIClient
    _filters: Any

    def container_disk_usage(self) -> list[ContainerDisk]:
        from .docker_backend import LABEL_CONTAINER, LABEL_WORKSPACE, _translated

        running = {**self._filters(), "status": ["running"]}
        with _translated("Listing the running containers"):
            rows = self.api.containers(filters=running)
        measured = []
        for row in rows:
            labels = row.get("Labels") or {}
            if LABEL_WORKSPACE not in labels or LABEL_CONTAINER not in labels:
                continue
            try:
                written = self._written(row["Id"], _translated)
            except _Gone:
                continue
            measured.append(ContainerDisk(labels[LABEL_WORKSPACE], labels[LABEL_CONTAINER], written))
        return measured

    def _written(self, container_id: str, translated: Any) -> int | None:
        """Bytes the container wrote to its own layer; None when the engine could not measure it."""
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


class _Gone(Exception):
    """The container went away between the list and its measure."""
