"""Users' data volumes, backed up to object storage and restored onto an engine that lacks them.

A backup is a tar of the whole volume (owners and modes kept), stored under
``data/u-<user id>/<time>-<sha256>.tar``. It is taken when a workspace stops,
every LATTICE_BACKUP_INTERVAL while one runs, and when the user asks; a
volume found unchanged since the last backup stores nothing new. The newest
LATTICE_BACKUPS_KEPT are kept.

A workspace starting on an engine that has no volume for its owner (a new
host, a lost disk) gets the newest backup first. If that backup cannot be
read, the start fails: starting on an empty volume would look like the
files were gone, and the next backups would record exactly that.

Every path that touches a user's volume (a start, a copy of starter files, a
collect, a backup, a restore) holds the user's data lock (``held``) and first
brings the files back if the volume is missing (``bring_back``), so that no
path makes an empty volume that a restore would then take for the user's own.
The lock is a Redis lock (redis-py's Lock, with a TTL renewed while it is
held), not a database row lock: a restore can take minutes, a transaction
held that long would block the database (SQLite: all of it), and the volume
lives on the engine, which every worker reaches, as they all reach Redis. A
killed worker's lock lapses by itself after LOCK_TTL.

Volumes are named by the user's id. One named by username (before ids) is
copied into the id's volume the first time the user's files are needed, or
by ``manage.py migrate_data_volumes``, checked, and kept for an administrator
to remove: never deleted here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone
from redis.exceptions import LockError

from ..engine.base import LegacyVolume, Progress, no_progress
from ..lib.engine_access import backend
from ..lib.object_store import StoreError, store
from ..lib.redis import redis_client
from ..models import DataSnapshot, User, Workspace, WorkspaceState

logger = logging.getLogger(__name__)

# A held lock lapses this long after its holder stopped renewing it (a killed worker).
LOCK_TTL = 20
# How long a path waits for another one working on the same user's files.
LOCK_WAIT = 600


class BackupError(Exception):
    """A backup or a restore could not be done; the message is for the user."""


def _lock_key(user_id: int) -> str:
    return f"lattice:data:{user_id}"


@contextlib.contextmanager
def held(*users: User, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the data lock of each user (taken in id order, so two holders never wait on each other)."""
    client = redis_client()
    locks = []
    stop = threading.Event()
    try:
        for user_id in sorted({u.pk for u in users}):
            lock = client.lock(
                _lock_key(user_id), timeout=LOCK_TTL, blocking_timeout=wait, thread_local=False
            )
            if not lock.acquire():
                raise BackupError("Another copy or restore of these files is taking long; try again later.")
            locks.append(lock)
        keeper = threading.Thread(target=_renew, args=(locks, stop), daemon=True)
        keeper.start()
        yield
    finally:
        stop.set()
        for lock in reversed(locks):
            with contextlib.suppress(LockError):
                lock.release()


def _renew(locks: list, stop: threading.Event) -> None:
    """Keep the locks while their holder works; they lapse LOCK_TTL after it died."""
    while not stop.wait(LOCK_TTL / 3):
        for lock in locks:
            try:
                lock.reacquire()
            except Exception:
                # A moment without Redis must not end the renewal: the next beat tries again.
                logger.warning("could not renew the data lock %s", lock.name, exc_info=True)


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
    with _scratch() as tar:
        with held(user):
            if not backend().data_volume_exists(user.pk):
                progress(100, "You have no files here yet: nothing to back up")
                return None
            progress(10, "Reading your files")
            hashing = _Hashing(tar)
            backend().export_data(user.pk, hashing)
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
        # By id, as the volume: a later account with the same username shares nothing.
        key = f"data/u-{user.pk}/{when:%Y%m%dT%H%M%S%f}-{digest[:16]}.tar"
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
    """Bring the user's files back when the engine lacks their volume; the backup used, if one was."""
    with held(user):
        return bring_back(user, progress)


def bring_back(user: User, progress: Progress = no_progress) -> DataSnapshot | None:
    """Call holding ``held(user)``. When the engine has no whole volume for the user: their
    volume named the old way (by username) if it is theirs, else their newest backup
    (a volume whose restore was cut short is restored again, over itself)."""
    if backend().data_volume_exists(user.pk):
        return None
    legacy = _legacy_volume_of(user)
    if legacy is not None:
        progress(3, "Moving your files to their new place")
        migrate(user, legacy)
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
        backend().import_data(user.pk, tar)
    return latest


# -- volumes named by username, from before ids ------------------------------


def belongs_to(volume: LegacyVolume, user: User) -> bool:
    """Is this username-keyed volume this account's? Usernames are compared without case
    (accounts are); not when the volume is older than the account: it was made for an
    earlier account of the same name (the engine's times are in whole seconds)."""
    return (
        (volume.username or "").lower() == user.username.lower()
        and volume.created is not None
        and volume.created >= user.date_joined - timedelta(seconds=1)
    )


def _legacy_volume_of(user: User) -> LegacyVolume | None:
    """The one username-keyed volume of this account not moved yet; None for none, or
    for several (names once told apart by case): an administrator decides then."""
    found = [v for v in backend().legacy_data_volumes() if v.migrated_to is None and belongs_to(v, user)]
    if len(found) > 1:
        logger.warning("%s has several old data volumes (%s): none moved", user.username, found)
    return found[0] if len(found) == 1 else None


def migrate(user: User, volume: LegacyVolume) -> None:
    """Call holding ``held(user)``. Copy a username-keyed volume into the user's id-keyed one
    and check every file arrived (names, types, owners, modes, times, contents).
    The old volume stays, recorded on the new one, for an administrator to remove."""
    with _scratch() as old, _scratch() as new:
        backend().export_legacy_data(volume.name, old)
        old.seek(0)
        backend().import_data(user.pk, old, migrated_from=volume.name)
        old.seek(0)
        backend().export_data(user.pk, new)
        new.seek(0)
        if _fingerprint(old) != _fingerprint(new):
            raise BackupError(
                f"Moving your files from {volume.name} did not copy them all; ask an administrator."
            )
    logger.info("data volume %s of %s moved to their id's volume", volume.name, user.username)


def migrate_all() -> list[str]:
    """Every username-keyed volume not yet moved: moved when its account is found, else told.

    One line per volume, for the person who runs it. Nothing is deleted.
    """
    lines = []
    for volume in backend().legacy_data_volumes():
        if volume.migrated_to is not None:
            lines.append(f"{volume.name}: moved to {volume.migrated_to}; an administrator may remove it")
            continue
        user = User.objects.filter(username__iexact=volume.username).first() if volume.username else None
        if user is None:
            lines.append(f"{volume.name}: no account named {volume.username!r}; kept as it is")
        elif not belongs_to(volume, user):
            lines.append(f"{volume.name}: older than the account {user.username}; kept for an earlier owner")
        else:
            lines.append(f"{volume.name}: {_migrate_one(user, volume)}")
    return lines


def _migrate_one(user: User, volume: LegacyVolume) -> str:
    try:
        with held(user):
            if backend().data_volume_exists(user.pk):
                return f"not moved: {user.username} has files in their id's volume already; kept as it is"
            migrate(user, volume)
    except Exception as exc:
        logger.exception("moving %s failed", volume.name)
        return f"not moved ({exc}); kept as it is"
    return f"moved to {user.username}'s volume (id {user.pk}); an administrator may remove it"


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
