"""Docker side of the disk watch: how much each running container wrote to its own filesystem.

A mixin of DockerBackend, like docker_data.py. The storage driver here
(fuse-overlayfs) has no size option, so a container's writable layer cannot be
capped by the engine; the worker watches it instead (workspaces/disk_watch.py)
and stops a workspace whose container passes its catalog limit. /data is a
volume, not part of the writable layer, and is never counted here.

Asking for sizes makes the engine walk every running container's upper layer,
so the call takes time (about 0.1 s a container on our machine; see
bench/disk_usage.py): it runs once a minute, in one list call for all of them.
"""

from __future__ import annotations

from typing import Any

import docker

from .base import ContainerDisk


class DockerUsageOps:
    """container_disk_usage for DockerBackend."""

    api: docker.APIClient
    _filters: Any

    def container_disk_usage(self) -> list[ContainerDisk]:
        from .docker_backend import LABEL_CONTAINER, LABEL_WORKSPACE, _translated

        filters = {**self._filters(), "status": ["running"]}
        with _translated("Measuring the containers' disk use"):
            rows = self.api.containers(filters=filters, size=True)
        return [
            ContainerDisk(
                workspace_id=row["Labels"][LABEL_WORKSPACE],
                container=row["Labels"][LABEL_CONTAINER],
                written=int(row.get("SizeRw") or 0),
            )
            for row in rows
            if LABEL_WORKSPACE in (row.get("Labels") or {}) and LABEL_CONTAINER in row["Labels"]
        ]
