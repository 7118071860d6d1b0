"""Users' data volumes, backed up to object storage and restored onto an engine that lacks them.

A backup is a tar of the whole volume (owners and modes kept), stored under
``data/<user>/<time>-<sha256>.tar``. It is taken when a workspace stops,
every LATTICE_BACKUP_INTERVAL while one runs, and when the user asks; a
volume found unchanged since the last backup stores nothing new. The newest
LATTICE_BACKUPS_KEPT are kept.

A workspace starting on an engine that has no volume for its owner (a new
host, a lost disk) gets the newest backup first. If that backup cannot be
read, the start fails: starting on an empty volume would look like the
files were gone, and the next backups would record exactly that.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from typing import BinaryIO

from django.conf import settings
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from .engine.base import Progress, no_progress
from .engine.names import escape
from .engine_access import backend
from .models import DataSnapshot, User, Workspace, WorkspaceState
from .object_store import StoreError, store


class BackupError(Exception):
    """A backup or a restore could not be done; the message is for the user."""


class _Hashing:
    """A file that counts and hashes what is written to it."""

    def __init__(self, out: BinaryIO):
        self.out, self.digest, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)


def _fingerprint(tar: BinaryIO) -> str:
    """What the files are, as a digest: see DataSnapshot.fingerprint."""
    digest = hashlib.sha256()
    try:
        with tarfile.open(fileobj=tar, mode="r|") as archive:
            for member in archive:
                top = member.name in (".", "./")
                header = (member.name, member.type, member.mode, member.uid, member.gid, member.size)
                digest.update(repr((*header, 0 if top else member.mtime, member.linkname)).encode())
                if member.isfile():
                    for chunk in iter(lambda f=archive.extractfile(member): f.read(1 << 20), b""):
                        digest.update(chunk)
    except tarfile.TarError as exc:
        raise BackupError(f"The engine's copy of the files could not be read ({exc}).") from exc
    return digest.hexdigest()


def _scratch() -> BinaryIO:
    folder = settings.VAR_DIR / "backups-in-progress"
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=folder)


def back_up(user: User, reason: str, progress: Progress = no_progress) -> DataSnapshot | None:
    """Store the user's whole data volume now, unless it is unchanged since the last backup.

    None when this engine has no data volume for the user (no start made one
    yet, or a restore of it did not finish): there is nothing to back up.
    """
    if not backend().data_volume_exists(user.username):
        progress(100, "You have no files here yet: nothing to back up")
        return None
    with _scratch() as tar:
        progress(10, "Reading your files")
        hashing = _Hashing(tar)
        backend().export_data(user.username, hashing)
        digest = hashing.digest.hexdigest()
        tar.seek(0)
        fingerprint = _fingerprint(tar)
        latest = user.snapshots.first()
        if latest is not None and latest.fingerprint == fingerprint:
            DataSnapshot.objects.filter(pk=latest.pk).update(checked=timezone.now())
            latest.refresh_from_db()
            progress(100, "Nothing changed since the last backup")
            return latest
        when = timezone.now()
        key = f"data/{escape(user.username)}/{when:%Y%m%dT%H%M%S%f}-{digest[:16]}.tar"
        progress(50, f"Storing {hashing.size / 1024**2:.1f} MiB")
        tar.seek(0)
        try:
            store().put(key, tar)
        except StoreError as exc:
            raise BackupError(f"The backup could not be stored: {exc}") from exc
    snapshot = DataSnapshot.objects.create(
        owner=user,
        key=key,
        size=hashing.size,
        sha256=digest,
        fingerprint=fingerprint,
        reason=reason,
        checked=when,
    )
    _prune(user)
    progress(100, "Backed up")
    return snapshot


def _prune(user: User) -> None:
    for old in user.snapshots.all()[settings.LATTICE_BACKUPS_KEPT :]:
        try:
            store().delete(old.key)
        except StoreError:
            continue  # kept in the list, tried again after the next backup
        old.delete()


def restore_if_missing(user: User, progress: Progress = no_progress) -> DataSnapshot | None:
    """Give the engine the user's newest backup when it has no data volume for them
    (or one whose restore was cut short: it is restored again, over itself)."""
    if backend().data_volume_exists(user.username):
        return None
    latest = user.snapshots.first()
    if latest is None:
        return None  # a new user: the start makes an empty volume
    progress(3, f"Restoring your files from the backup of {timezone.localtime(latest.created):%d %b %H:%M}")
    with _scratch() as tar:
        hashing = _Hashing(tar)
        try:
            store().get(latest.key, hashing)
        except StoreError as exc:
            raise BackupError(f"Your files could not be restored from storage ({exc}); try again.") from exc
        if hashing.digest.hexdigest() != latest.sha256:
            raise BackupError(
                "Your newest backup is damaged (its checksum does not match); ask an administrator."
            )
        tar.seek(0)
        backend().import_data(user.username, tar)
    return latest


def due() -> list[User]:
    """Users whose files may have changed since their last backup: a workspace of
    theirs runs, or changed state after that backup (or they have none yet)."""
    backed_up = Subquery(
        DataSnapshot.objects.filter(owner=OuterRef("owner")).order_by("-checked").values("checked")[:1]
    )
    owners = (
        Workspace.objects.annotate(backed_up=backed_up)
        .filter(Q(state=WorkspaceState.RUNNING) | Q(backed_up__isnull=True) | Q(updated__gt=F("backed_up")))
        .values("owner")
    )
    return list(User.objects.filter(pk__in=owners))
