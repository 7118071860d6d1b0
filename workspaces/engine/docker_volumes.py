"""Docker side of a user's data volume as a whole: does it exist, export it, import it.

A mixin of DockerBackend, like docker_data.py. Export and import go through a
container that is created and never started (the engine mounts its volumes
for an archive call): nothing runs, nothing listens, and the tar stream
keeps every file's owner and mode.

An import writes the RESTORING marker into the volume first and removes it
last. A volume that still has it was not restored whole (the worker was
killed mid-way): it counts as missing, so the next start restores it again
and no backup records its partial files. Only a volume an import made can
have the marker, and such a volume carries the RESTORED label: every other
volume is checked with one inspect, as a workspace start needs it quick.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO

import docker.errors
import requests

from . import names
from .errors import EngineError

CHUNK = 1 << 20
# In /data while an import runs; see the module docstring.
RESTORING = ".lattice-restoring"
RESTORED_LABEL = "lattice.restored"


def _marker_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo(RESTORING)
        info.uid = info.gid = 1000
        archive.addfile(info, io.BytesIO(b""))
    return out.getvalue()


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
    def _over_data_volume(self, owner: str, mode: str, command: list[str] | None = None) -> Iterator[str]:
        container = self.file_ops_container(
            {names.data_volume(self.prefix, owner): {"bind": "/data", "mode": mode}}, command
        )
        try:
            yield container
        finally:
            self.api.remove_container(container, force=True)

    def _data_volume(self, owner: str) -> dict | None:
        try:
            return self.api.inspect_volume(names.data_volume(self.prefix, owner))
        except docker.errors.NotFound:
            return None

    def _restore_unfinished(self, container: str) -> bool:
        try:
            stream, _ = self.api.get_archive(container, f"/data/{RESTORING}")
        except docker.errors.NotFound:
            return False
        for _chunk in stream:  # an empty file: read, so that the connection is free again
            pass
        return True

    def data_volume_exists(self, owner: str) -> bool:
        """The volume is there, and no import of it was cut short."""
        from .docker_backend import _translated

        with _translated("Looking for the data volume"):
            volume = self._data_volume(owner)
            if volume is None:
                return False
            if RESTORED_LABEL not in (volume.get("Labels") or {}):
                return True
            with self._over_data_volume(owner, "ro") as container:
                return not self._restore_unfinished(container)

    def export_data(self, owner: str, out: BinaryIO) -> None:
        """Write a tar of the owner's whole /data to ``out``."""
        from .docker_backend import _translated

        with _translated("Exporting the data volume"):
            volume = self._data_volume(owner)
            if volume is None:
                raise EngineError(f"{owner} has no data volume on this engine.")
            restored = RESTORED_LABEL in (volume.get("Labels") or {})
            with self._over_data_volume(owner, "ro") as container:
                if restored and self._restore_unfinished(container):
                    raise EngineError(f"The restore of {owner}'s data volume did not finish.")
                stream, _ = self.api.get_archive(container, "/data/.", chunk_size=CHUNK)
                for chunk in stream:
                    out.write(chunk)

    def import_data(self, owner: str, tar: BinaryIO) -> None:
        """Unpack a tar made by export_data into the owner's /data (made if missing).

        A volume this call made is removed again when the import fails; one
        that was there keeps the RESTORING marker, so it still counts as missing.
        """
        from .docker_backend import _translated

        volume = names.data_volume(self.prefix, owner)
        with _translated("Restoring the data volume"):
            # The same labelled volume a workspace start would make.
            created = self._ensure_volume(volume, {**self.data_volume_labels(owner), RESTORED_LABEL: "1"})
            try:
                with self._over_data_volume(owner, "rw", ["rm", "-f", f"/data/{RESTORING}"]) as container:
                    if not self.api.put_archive(container, "/data", _marker_tar()):
                        raise EngineError("The engine refused the files to restore.")
                    if not self.api.put_archive(container, "/data", tar):
                        raise EngineError("The engine refused the files to restore.")
                    self.api.start(container)  # removes the marker: the files are all there
                    code = self.api.wait(container, timeout=60)["StatusCode"]
                    if code != 0:
                        raise EngineError(f"The restored files could not be marked complete (code {code}).")
            except BaseException:
                if created:
                    with contextlib.suppress(
                        docker.errors.DockerException, requests.exceptions.RequestException
                    ):
                        self.api.remove_volume(volume, force=True)
                raise
