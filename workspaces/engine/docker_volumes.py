"""Docker side of a user's data volume as a whole: does it exist, export it, import it.

A mixin of DockerBackend, like docker_data.py. Export and import go through a
container that is created and never started (the engine mounts its volumes
for an archive call): nothing runs, nothing listens, and the tar stream
keeps every file's owner and mode.

Data volumes are named by the owner's stable id (names.data_volume). Volumes
named the old way, by username, are listed by legacy_data_volumes and copied
into the id's volume by the service layer (export_legacy_data, then
import_data with ``migrated_from``); the old one is never removed here.

An import writes the RESTORING marker into the volume first and removes it
last. A volume that still has it was not restored whole (the worker was
killed mid-way): it counts as missing, so the next start restores it again
and no backup records its partial files. Only a volume an import made can
have the marker, and such a volume carries the RESTORED label: every other
volume is checked with one inspect, as a workspace start needs it quick.

A symlink in /data may point anywhere (``ln -s ../../.. up``): it is the
student's file, kept as a link and never followed. The engine's own unpacking
refuses a link whose target leaves the folder it unpacks into, so such links
are taken out of the archive and made afterwards by ``ln`` inside the
helper, which writes the link and reads nothing through it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import posixpath
import tarfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO

import docker.errors
import requests

from . import names
from .base import LegacyVolume
from .docker_common import (
    LABEL_OWNER,
    LABEL_OWNER_ID,
    LABEL_PREFIX,
    LABEL_ROLE,
    MIGRATED_FROM_LABEL,
    RESTORED_LABEL,
    USER,
    translated,
)
from .errors import EngineError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
# In /data while an import runs; see the module docstring.
RESTORING = ".lattice-restoring"
# In the import helper's own /tmp (never in /data): the links to make after the unpack.
_LINKS = "lattice-links"
# Makes the links listed in /tmp/lattice-links (NUL-separated target, path,
# mtime), then removes the marker: the restore is whole.
_FINISH_IMPORT = rf"""
set -eu
if [ -f /tmp/{_LINKS} ]; then
  while IFS= read -r -d '' target && IFS= read -r -d '' path && IFS= read -r -d '' mtime; do
    # One link that cannot be made (a read-only folder) is told, not a restore failing forever.
    ln -sfT -- "$target" "/data/$path" && touch -h -d "@$mtime" -- "/data/$path" \
      || echo "could not make the link /data/$path" >&2
  done < /tmp/{_LINKS}
  # Making a link touched its folder: the folder's time goes back to the backup's.
  while IFS= read -r -d '' path && IFS= read -r -d '' mtime; do
    touch -d "@$mtime" -- "/data/$path" || true
  done < /tmp/{_LINKS}-folders
fi
rm -f /data/{RESTORING}
"""


def _marker_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo(RESTORING)
        info.uid = info.gid = 1000
        archive.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def _points_out(member: tarfile.TarInfo) -> bool:
    """Would the engine's unpacking refuse this link (its target leaves the folder)?

    The engine joins a link's target to the link's folder, even an absolute
    one, and refuses what lands outside.
    """
    if not member.issym():
        return False
    folder = posixpath.dirname(posixpath.normpath("/data/" + member.name))
    target = posixpath.normpath(f"{folder}/{member.linkname}")
    return target != "/data" and not target.startswith("/data/")


def _outward_links(tar: BinaryIO) -> tuple[list[tarfile.TarInfo], dict[str, int]]:
    """The symlinks of an export that must be made by ``ln``, and the times of
    the folders that hold them; reads headers only.

    A hard link to such a symlink (``ln -P``) would have nothing to link to
    once the symlink is out of the archive: it is made as the same symlink.
    """
    start = tar.tell()
    try:
        with tarfile.open(fileobj=tar, mode="r:") as archive:
            links, folders, targets = [], {}, {}
            for member in archive:
                if _points_out(member):
                    links.append(member)
                    targets[posixpath.normpath(member.name)] = member.linkname
                elif member.islnk() and posixpath.normpath(member.linkname) in targets:
                    same = copy.copy(member)
                    same.type, same.linkname = tarfile.SYMTYPE, targets[posixpath.normpath(member.linkname)]
                    links.append(same)
                elif member.isdir():
                    folders[posixpath.normpath(member.name)] = int(member.mtime)
            held = {posixpath.dirname(posixpath.normpath(m.name)) or "." for m in links}
            return links, {path: mtime for path, mtime in folders.items() if path in held}
    except tarfile.TarError as exc:
        raise EngineError(f"The files to restore are not a readable archive ({exc}).") from exc
    finally:
        tar.seek(start)


class _Sink:
    """Where tarfile writes, emptied after each member: the archive as a stream of chunks."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def take(self) -> bytes:
        data = self.buffer.getvalue()
        self.buffer = io.BytesIO()
        return data


def _without(tar: BinaryIO, skipped: set[str]) -> Iterator[bytes]:
    """The archive without the members named in ``skipped``, streamed."""
    sink = _Sink()
    with (
        tarfile.open(fileobj=tar, mode="r|") as source,
        tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as target,  # type: ignore[arg-type]
    ):
        for member in source:
            if member.name in skipped:
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
            yield sink.take()
    yield sink.take()


def _nul_ended(fields: list[str]) -> bytes:
    return b"".join(f.encode("utf-8", "surrogateescape") + b"\0" for f in fields)


def _links_file(links: list[tarfile.TarInfo], folders: dict[str, int]) -> bytes:
    """A tar holding /tmp/lattice-links and /tmp/lattice-links-folders for _FINISH_IMPORT."""
    files = {
        _LINKS: _nul_ended(
            [f for m in links for f in (m.linkname, posixpath.normpath(m.name), str(int(m.mtime)))]
        ),
        f"{_LINKS}-folders": _nul_ended([f for path, mtime in folders.items() for f in (path, str(mtime))]),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(content), 1000, 1000, 0o600
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _created(volume: dict[str, Any]) -> datetime | None:
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return datetime.fromisoformat(volume["CreatedAt"].replace("Z", "+00:00"))
    return None


class DockerVolumeOps:
    """data_volume_exists, export_data and import_data for DockerBackend."""

    api: docker.APIClient
    prefix: str
    _ensure_volume: Any
    data_volume_labels: Any
    file_ops_image: str = "lattice/base:latest"

    def file_ops_container(self, binds: dict[str, dict[str, str]], command: list[str] | None = None) -> str:
        """A hardened, network-less helper container over some volumes (not started)."""
        return self.api.create_container(
            self.file_ops_image,
            command=command or ["true"],
            user=USER,
            network_disabled=True,
            labels={LABEL_PREFIX: self.prefix, LABEL_ROLE: "file-ops"},
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
    def _over_volume(self, volume: str, mode: str, command: list[str] | None = None) -> Iterator[str]:
        container = self.file_ops_container({volume: {"bind": "/data", "mode": mode}}, command)
        try:
            yield container
        finally:
            self.api.remove_container(container, force=True)

    def _data_volume(self, owner_id: int) -> dict | None:
        try:
            return self.api.inspect_volume(names.data_volume(self.prefix, owner_id))
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

    def data_volume_exists(self, owner_id: int) -> bool:
        """The volume is there, and no import of it was cut short."""
        with translated("Looking for the data volume"):
            volume = self._data_volume(owner_id)
            if volume is None:
                return False
            if RESTORED_LABEL not in (volume.get("Labels") or {}):
                return True
            with self._over_volume(volume["Name"], "ro") as container:
                return not self._restore_unfinished(container)

    def export_data(self, owner_id: int, out: BinaryIO) -> None:
        """Write a tar of the owner's whole /data to ``out``."""
        with translated("Exporting the data volume"):
            volume = self._data_volume(owner_id)
            if volume is None:
                raise EngineError("There is no data volume for this user on this engine.")
            restored = RESTORED_LABEL in (volume.get("Labels") or {})
            with self._over_volume(volume["Name"], "ro") as container:
                if restored and self._restore_unfinished(container):
                    raise EngineError("The restore of this user's data volume did not finish.")
                self._archive_to(container, out)

    def _archive_to(self, container: str, out: BinaryIO) -> None:
        stream, _ = self.api.get_archive(container, "/data/.", chunk_size=CHUNK)
        for chunk in stream:
            out.write(chunk)

    def import_data(self, owner_id: int, tar: BinaryIO, migrated_from: str = "") -> None:
        """Unpack a tar made by export_data into the owner's /data (made if missing).

        ``tar`` must be seekable. Symlinks are kept as links, wherever they
        point (see the module docstring). A volume this call made is removed
        again when the import fails; one that was there keeps the RESTORING
        marker, so it still counts as missing.
        """
        volume = names.data_volume(self.prefix, owner_id)
        labels = {**self.data_volume_labels(owner_id), RESTORED_LABEL: "1"}
        if migrated_from:
            labels[MIGRATED_FROM_LABEL] = migrated_from
        links, folders = _outward_links(tar)
        with translated("Restoring the data volume"):
            # The same labelled volume a workspace start would make.
            created = self._ensure_volume(volume, labels)
            try:
                with self._over_volume(volume, "rw", ["bash", "-c", _FINISH_IMPORT]) as container:
                    if not self.api.put_archive(container, "/data", _marker_tar()):
                        raise EngineError("The engine refused the files to restore.")
                    files = _without(tar, {m.name for m in links}) if links else tar
                    if not self.api.put_archive(container, "/data", files):
                        raise EngineError("The engine refused the files to restore.")
                    if links and not self.api.put_archive(container, "/tmp", _links_file(links, folders)):  # noqa: S108
                        raise EngineError("The engine refused the links to restore.")
                    self.api.start(container)  # makes the links, removes the marker: all there
                    code = self.api.wait(container, timeout=120)["StatusCode"]
                    err = self.api.logs(container, stdout=False, stderr=True).decode(errors="replace")
                    if code != 0:
                        raise EngineError(f"The restored files could not be completed: {err.strip()[:200]}")
                    if err.strip():
                        logger.warning("restore of data volume %s: %s", volume, err.strip()[:500])
            except BaseException:
                if created:
                    with contextlib.suppress(
                        docker.errors.DockerException, requests.exceptions.RequestException
                    ):
                        self.api.remove_volume(volume, force=True)
                raise

    # -- volumes named by username, from before ids --------------------------

    def legacy_data_volumes(self) -> list[LegacyVolume]:
        """This prefix's data volumes that are named by username (not by id), oldest first."""
        with translated("Listing data volumes"):
            found = (
                self.api.volumes(filters={"label": [f"{LABEL_PREFIX}={self.prefix}", f"{LABEL_ROLE}=data"]})
                or {}
            ).get("Volumes") or []
        migrated = {
            (v.get("Labels") or {}).get(MIGRATED_FROM_LABEL): v["Name"]
            for v in found
            if (v.get("Labels") or {}).get(MIGRATED_FROM_LABEL)
        }
        legacy = []
        for volume in found:
            labels = volume.get("Labels") or {}
            if LABEL_OWNER_ID in labels:
                continue
            username = labels.get(LABEL_OWNER)
            if username is None or names.legacy_data_volume(self.prefix, username) != volume["Name"]:
                username = names.unescape(volume["Name"].removeprefix(f"{self.prefix}-data-"))
            legacy.append(
                LegacyVolume(volume["Name"], username, _created(volume), migrated.get(volume["Name"]))
            )
        return sorted(legacy, key=lambda v: (v.created is None, v.created or datetime.min, v.name))

    def export_legacy_data(self, name: str, out: BinaryIO) -> None:
        """Write a tar of a username-keyed volume (as legacy_data_volumes names it) to ``out``."""
        if not name.startswith(f"{self.prefix}-data-") or name.startswith(f"{self.prefix}-data-u-"):
            raise EngineError(f"{name} is not a data volume named by username.")
        with translated("Exporting the old data volume"), self._over_volume(name, "ro") as container:
            self._archive_to(container, out)
