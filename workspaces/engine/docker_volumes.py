"""Docker side of a user's data volume as a whole: does it exist, export it, import it.

A mixin of DockerBackend, like docker_data.py. Export and import go through a
container that is created and never started (the engine mounts its volumes
for an archive call): nothing runs, nothing listens, and the tar stream
keeps every file's owner and mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import docker.errors

from . import names
from .errors import EngineError

CHUNK = 1 << 20


class DockerVolumeOps:
    """data_volume_exists, export_data and import_data for DockerBackend."""

    api: docker.APIClient
    prefix: str
    _ensure_volume: Any
    data_volume_labels: Any
    file_ops_image: str = "lattice/base:latest"

    def file_ops_container(self, binds: dict[str, dict[str, str]], command: list[str] | None = None) -> str:
        """A hardened, network-less helper container over some volumes (not started)."""
        from .docker_backend import USER

        return self.api.create_container(
            self.file_ops_image,
            command=command or ["true"],
            user=USER,
            network_disabled=True,
            labels={"lattice.prefix": self.prefix, "lattice.role": "file-ops"},
            host_config=self.api.create_host_config(
                binds=binds,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit="256m",
                nano_cpus=1_000_000_000,
                pids_limit=64,
                network_mode="none",
            ),
        )["Id"]

    @contextlib.contextmanager
    def _over_data_volume(self, owner: str, mode: str) -> Iterator[str]:
        container = self.file_ops_container(
            {names.data_volume(self.prefix, owner): {"bind": "/data", "mode": mode}}
        )
        try:
            yield container
        finally:
            self.api.remove_container(container, force=True)

    def data_volume_exists(self, owner: str) -> bool:
        from .docker_backend import _translated

        with _translated("Looking for the data volume"):
            try:
                self.api.inspect_volume(names.data_volume(self.prefix, owner))
            except docker.errors.NotFound:
                return False
        return True

    def export_data(self, owner: str, out: BinaryIO) -> int:
        """Write a tar of the owner's whole /data to ``out``; the bytes written."""
        from .docker_backend import _translated

        if not self.data_volume_exists(owner):
            raise EngineError(f"{owner} has no data volume on this engine.")
        written = 0
        with _translated("Exporting the data volume"), self._over_data_volume(owner, "ro") as container:
            stream, _ = self.api.get_archive(container, "/data/.", chunk_size=CHUNK)
            for chunk in stream:
                out.write(chunk)
                written += len(chunk)
        return written

    def import_data(self, owner: str, tar: BinaryIO) -> None:
        """Unpack a tar made by export_data into the owner's /data (made if missing)."""
        from .docker_backend import _translated

        with _translated("Restoring the data volume"):
            # The same labelled volume a workspace start would make.
            self._ensure_volume(names.data_volume(self.prefix, owner), self.data_volume_labels(owner))
            with self._over_data_volume(owner, "rw") as container:
                if not self.api.put_archive(container, "/data", tar):
                    raise EngineError("The engine refused the files to restore.")
