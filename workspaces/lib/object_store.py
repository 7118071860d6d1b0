"""Where users' data volumes are backed up: a local folder, or any S3-compatible store.

The only code that talks to object storage. ``LATTICE_OBJECT_STORAGE`` is a
folder (the embedded default, ``var/object-storage``) or ``s3://bucket/prefix``
with ``LATTICE_S3_ENDPOINT_URL`` for a store that is not AWS (MinIO, Ceph,
Garage...). Objects are written whole or not at all: a reader never sees half
a backup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from django.conf import settings


class StoreError(Exception):
    """The object store could not do it; the message says why."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, source: BinaryIO) -> None:
        """Store the whole of ``source`` (read from where it is) under ``key``."""

    @abstractmethod
    def get(self, key: str, out: BinaryIO) -> None:
        """Write the object to ``out``; StoreError when there is none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Forget the object; a missing one is success."""

    @abstractmethod
    def list(self, prefix: str) -> list[StoredObject]:
        """Objects whose key starts with ``prefix``, by key."""

    @abstractmethod
    def check(self) -> None:
        """A cheap probe that the store can be used; StoreError says why not."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"bad object key {key!r}")
    return key


class LocalFolderStore(ObjectStore):
    """Objects as files under a folder; the folder's own errors are StoreErrors too."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, source: BinaryIO) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written beside and renamed: the object appears whole or not at all.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"could not store {key}: {exc}") from exc

    def get(self, key: str, out: BinaryIO) -> None:
        try:
            with self._path(key).open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
        except FileNotFoundError:
            raise StoreError(f"there is no object {key}") from None
        except OSError as exc:
            raise StoreError(f"could not read {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"could not delete {key}: {exc}") from exc

    def list(self, prefix: str) -> list[StoredObject]:
        if not self.root.exists():
            return []
        found = []
        try:
            for path in self.root.rglob("*"):
                key = path.relative_to(self.root).as_posix()
                if path.is_file() and not path.name.startswith(".incoming-") and key.startswith(prefix):
                    found.append(StoredObject(key, path.stat().st_size))
        except OSError as exc:
            raise StoreError(f"could not list {prefix}: {exc}") from exc
        return sorted(found, key=lambda o: o.key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"could not make the folder: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"this user ({os.getuid()}) cannot write to {self.root}")


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", **client_options):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        self.errors = (BotoCoreError, ClientError)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client("s3", **client_options)

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, source: BinaryIO) -> None:
        try:
            # Multipart for large backups; S3 makes the object visible only when it is complete.
            self.client.upload_fileobj(source, self.bucket, self._key(key))
        except self.errors as exc:
            raise StoreError(f"could not store {key}: {exc}") from exc

    def get(self, key: str, out: BinaryIO) -> None:
        try:
            self.client.download_fileobj(self.bucket, self._key(key), out)
        except self.errors as exc:
            raise StoreError(f"could not read {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self.errors as exc:
            raise StoreError(f"could not delete {key}: {exc}") from exc

    def list(self, prefix: str) -> list[StoredObject]:
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            ):
                for item in page.get("Contents", []):
                    found.append(StoredObject(item["Key"][len(self.prefix) :], item["Size"]))
        except self.errors as exc:
            raise StoreError(f"could not list {prefix}: {exc}") from exc
        return sorted(found, key=lambda o: o.key)

    def check(self) -> None:
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except self.errors as exc:
            raise StoreError(f"could not list the bucket {self.bucket}: {exc}") from exc


def open_store(location: str) -> ObjectStore:
    """The store a LATTICE_OBJECT_STORAGE value names."""
    if location.startswith("s3://"):
        parts = urlsplit(location)
        options = {
            "endpoint_url": settings.LATTICE_S3_ENDPOINT_URL or None,
            "region_name": settings.LATTICE_S3_REGION or None,
            "aws_access_key_id": settings.LATTICE_S3_ACCESS_KEY or None,
            "aws_secret_access_key": settings.LATTICE_S3_SECRET_KEY or None,
        }
        return S3Store(parts.netloc, parts.path, **{k: v for k, v in options.items() if v})
    return LocalFolderStore(location)


@lru_cache(maxsize=1)
def store() -> ObjectStore:
    return open_store(settings.LATTICE_OBJECT_STORAGE)
