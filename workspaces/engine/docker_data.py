"""Docker side of saving containers as images and of moving files between data volumes.

A mixin of DockerBackend (it uses the backend's ``api``, ``prefix`` and error
translation), kept apart so the start/stop code stays readable.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
import tempfile
from typing import Any, BinaryIO

import docker.errors
import requests

from . import names
from .docker_common import WORKSPACE_LABELS, translated
from .errors import ContainerNotFound, EngineError, ImageNotFound

# The engine's diff kinds.
_KINDS = {0: "changed", 1: "added", 2: "deleted"}
# Mounted, not part of the container's own filesystem, or rewritten at every start.
_NOT_SAVED = ("/data", "/tmp/.X11-unix", "/dev", "/proc", "/sys", "/run", "/tmp/.X0-lock")  # noqa: S108
# Secrets the display gets at create time; a saved image must not keep them.
_SECRET_ENV = ("LATTICE_VNC_PASSWORD", "LATTICE_VNC_VIEW_PASSWORD")

# Step one of a copy, in a helper that has nothing but the source volume
# (read-only, at /data): a snapshot of the folder. GNU tar opens every file
# and folder relative to its parent with O_NOFOLLOW and checks what it opened
# is what it listed, and stores links, fifos and devices as what they are
# without opening them: nothing swapped in during the copy makes it read
# outside the folder. tar leaves sockets out; find lists them, to report.
SNAPSHOT_SCRIPT = r"""
set -u
cd /data
if [ -L "./$1" ] || [ ! -d "./$1" ]; then echo "ERROR there is no folder /data/$1" >&2; exit 4; fi
mkdir -p /tmp/snapshot
find "./$1" -type s -print0 > /tmp/snapshot/sockets
tar --create --format=gnu --numeric-owner --file=/tmp/snapshot/files.tar "./$1" 2> /tmp/snapshot/errors
code=$?
# 1: a file changed while it was read; 2: some could not be read (told in
# errors). What tar stored is whole either way.
if [ "$code" -gt 2 ] || [ ! -f /tmp/snapshot/files.tar ]; then
  echo "ERROR the files could not be read (tar: $code)" >&2; exit 5
fi
exit 0
"""

# Step two, in a helper that has nothing but the target volume (at /data):
# the regular files the worker kept from the snapshot, in /tmp/incoming, go
# into /data/$1 without replacing anything: a file whose name is taken, with
# other content, is written beside it as "<name>.1", "<name>.2", … One
# record per file in /tmp/report, each field ending in NUL (names may hold
# any byte but NUL): status, sha256 of the source, of what was written, path.
COPY_SCRIPT = r"""
set -uo pipefail
: > /tmp/report
dst=$(realpath -m "/data/$1")
case "$dst/" in /data/*) ;; *) echo "ERROR the target folder is outside /data" >&2; exit 3;; esac
mkdir -p -- "$dst" || { echo "ERROR the target folder cannot be made" >&2; exit 3; }
cd /tmp/incoming
find . -mindepth 1 -type d -print0 | while IFS= read -r -d '' d; do
  mkdir -p -- "$dst/$d" 2>/dev/null || printf 'failed\0-\0-\0%s\0' "${d#./}" >> /tmp/report
done
find . -type f -print0 | while IFS= read -r -d '' f; do
  target="$dst/${f#./}"
  status=copied
  if [ -e "$target" ] || [ -L "$target" ]; then
    if [ -f "$target" ] && cmp -s -- "$f" "$target"; then
      status=same
    else
      n=1; while [ -e "$target.$n" ] || [ -L "$target.$n" ]; do n=$((n+1)); done
      target="$target.$n"; status=beside
    fi
  fi
  if [ "$status" != same ] && ! cp -p --no-dereference -- "$f" "$target" 2>/dev/null; then
    printf 'failed\0-\0-\0%s\0' "${f#./}" >> /tmp/report; continue
  fi
  a=$(sha256sum < "$f" | cut -c1-64); b=$(sha256sum < "$target" | cut -c1-64)
  printf '%s\0%s\0%s\0%s\0' "$status" "$a" "$b" "${target#"$dst"/}" >> /tmp/report
done
exit 0
"""
# What tar says of a file it stored, or that is reported apart (sockets): not a failure.
_TAR_NOTES = ("socket ignored", "file changed as we read it")
# What a snapshot member that is not a file or folder is called in a report.
_KINDS_SKIPPED = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.FIFOTYPE: "a named pipe",
    tarfile.CHRTYPE: "a device",
    tarfile.BLKTYPE: "a device",
}


def shown(name: str | bytes) -> str:
    """A file name as a person can read it (and JSON can hold): bytes that are not UTF-8 as \\xNN."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


class DockerDataOps:
    """commit, diff, image_size, remove_image and copy_data for DockerBackend."""

    api: docker.APIClient
    prefix: str
    _ensure_volume: Any
    data_volume_labels: Any
    file_ops_container: Any
    data_volume_exists: Any

    def _docker_name(self, workspace_id: str, container: str) -> str:
        return names.container(self.prefix, str(workspace_id), container)

    def diff(self, workspace_id: str, container: str) -> list[dict[str, str]]:
        """What the container changed in its own filesystem: [{"path", "kind"}]."""
        with translated(f"Listing the changes of {container}"):
            try:
                rows = self.api.diff(self._docker_name(workspace_id, container)) or []
            except docker.errors.NotFound as exc:
                raise ContainerNotFound(f"The workspace has no container {container!r}.") from exc
        return [
            {"path": row["Path"], "kind": _KINDS.get(row["Kind"], "changed")}
            for row in rows
            if not any(row["Path"] == p or row["Path"].startswith(p + "/") for p in _NOT_SAVED)
        ]

    def commit(
        self, workspace_id: str, container: str, reference: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        """Save the container as ``reference`` (paused while the engine copies it)."""
        repository, tag = names.split_reference(reference)
        changes = [f"ENV {name}=" for name in _SECRET_ENV]
        changes += [f'LABEL {key}=""' for key in WORKSPACE_LABELS]
        changes += [f"LABEL {key}={_quote(value)}" for key, value in labels.items()]
        with translated(f"Saving {container}"):
            try:
                result = self.api.commit(
                    self._docker_name(workspace_id, container),
                    repository=repository,
                    tag=tag,
                    changes=changes,
                    pause=True,
                )
            except docker.errors.NotFound as exc:
                raise ContainerNotFound(f"The workspace has no container {container!r}.") from exc
            info = self.api.inspect_image(result["Id"])
        return {"id": info["Id"], "size": info.get("Size", 0), "reference": reference}

    def image_size(self, reference: str) -> int:
        with translated(f"Reading image {reference}"):
            try:
                return int(self.api.inspect_image(reference).get("Size", 0))
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The image {reference} is not on this engine.") from exc

    def remove_image(self, reference: str) -> None:
        """Remove one tag; the layers go when nothing else uses them. Missing is success."""
        with translated(f"Removing image {reference}"):
            try:
                self.api.remove_image(reference, noprune=False)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise EngineError(f"The image {reference} is still used by a container.") from exc
                raise

    def copy_data(self, src_owner: int, src_path: str, dst_owner: int, dst_path: str) -> list[dict[str, str]]:
        """Copy a folder of one user's data volume into another's, replacing nothing.

        Owners are user ids. Two short-lived, hardened, network-less helpers,
        each with one volume: a snapshot of the source folder (read-only),
        then the copy of its regular files into the target. One entry per
        file: "path", "status" (copied, beside, same, failed or skipped),
        "source_sha256", "sha256" (of what was written) and, when skipped,
        "detail": links, pipes, sockets and devices are never copied.
        """
        for path in (src_path, dst_path):
            if posixpath.isabs(path) or ".." in path.split("/") or "\0" in path or not path.strip("/"):
                raise EngineError(f"{path!r} must be a folder inside /data, like 'lessons/week1'.")
        if not self.data_volume_exists(src_owner):
            raise EngineError(f"There are no files yet: there is no /data/{src_path}.")
        with tempfile.TemporaryFile() as snapshot, tempfile.TemporaryFile() as incoming:
            self._snapshot(src_owner, src_path, snapshot)
            kept, skipped = _kept_files(snapshot, src_path.strip("/"), incoming)
            report = self._copy_in(dst_owner, dst_path, incoming) if kept else []
        return _merged(kept, report) + skipped

    def _run_helper(self, container: str, doing: str, timeout: float = 300) -> None:
        """Start a helper made by file_ops_container and wait for it; EngineError with its words."""
        self.api.start(container)
        try:
            code = self.api.wait(container, timeout=timeout)["StatusCode"]
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"{doing} took longer than {timeout:g} s.") from exc
        if code != 0:
            err = self.api.logs(container, stdout=False, stderr=True).decode(errors="replace").strip()
            lines = [line.removeprefix("ERROR ") for line in err.splitlines() if line.startswith("ERROR ")]
            raise EngineError(f"{doing} failed: {lines[-1] if lines else f'code {code}'}")

    def _fetch(self, container: str, path: str, out: BinaryIO) -> None:
        stream, _ = self.api.get_archive(container, path, chunk_size=1 << 20)
        for chunk in stream:
            out.write(chunk)
        out.seek(0)

    def _snapshot(self, owner_id: int, path: str, out: BinaryIO) -> None:
        """A tar (from the helper) holding snapshot/files.tar, snapshot/sockets and snapshot/errors."""
        volume = names.data_volume(self.prefix, owner_id)
        with translated("Reading the files to copy"):
            container = self.file_ops_container(
                {volume: {"bind": "/data", "mode": "ro"}},
                command=["bash", "-c", SNAPSHOT_SCRIPT, "snapshot", path.strip("/")],
            )
            try:
                self._run_helper(container, "Reading the files to copy")
                self._fetch(container, "/tmp/snapshot", out)  # noqa: S108  (the helper's own /tmp)
            finally:
                self.api.remove_container(container, force=True)

    def _copy_in(self, owner_id: int, path: str, incoming: BinaryIO) -> list[tuple[str, str, str, bytes]]:
        """Put the files into the owner's volume; the helper's records."""
        volume = names.data_volume(self.prefix, owner_id)
        with translated("Copying files"):
            # The same labelled volume a workspace start would make; at /data,
            # where the image has it owned by the user, so a new one gets that.
            self._ensure_volume(volume, self.data_volume_labels(owner_id))
            container = self.file_ops_container(
                {volume: {"bind": "/data", "mode": "rw"}},
                command=["bash", "-c", COPY_SCRIPT, "copy", path.strip("/")],
            )
            try:
                if not self.api.put_archive(container, "/tmp", incoming):  # noqa: S108
                    raise EngineError("Copying files failed: the engine refused them.")
                self._run_helper(container, "Copying files")
                with tempfile.TemporaryFile() as out:
                    self._fetch(container, "/tmp/report", out)  # noqa: S108
                    with tarfile.open(fileobj=out) as archive:
                        member = archive.extractfile("report")
                        raw = member.read() if member is not None else b""
            finally:
                self.api.remove_container(container, force=True)
        return _records(raw)


def _quote(value: str) -> str:
    """A LABEL value for a Dockerfile-style change line."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _records(raw: bytes) -> list[tuple[str, str, str, bytes]]:
    """The copy helper's NUL-ended records: (status, source sha256, written sha256, path)."""
    fields = raw.split(b"\0")
    fields.pop()  # after the last NUL: empty when the report is whole
    whole = len(fields) - len(fields) % 4
    return [
        (
            fields[i].decode(errors="replace"),
            fields[i + 1].decode(errors="replace"),
            fields[i + 2].decode(errors="replace"),
            fields[i + 3],
        )
        for i in range(0, whole, 4)
    ]


def _member_path(name: str, top: str) -> str | None:
    """A snapshot member's path inside the copied folder ("" for the folder itself); None for any other."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    head = top.split("/")
    if parts[: len(head)] != head or ".." in parts:
        return None
    return "/".join(parts[len(head) :])


def _kept_files(
    snapshot: BinaryIO, top: str, incoming: BinaryIO
) -> tuple[dict[bytes, str], list[dict[str, str]]]:
    """From the snapshot, a tar of its folders and regular files under incoming/ (in ``incoming``).

    Returns the kept files' sha256 by path (bytes, as the copy helper names
    them) and a report entry for everything skipped.
    """
    kept: dict[bytes, str] = {}
    skipped: list[dict[str, str]] = []
    unread: list[dict[str, str]] = []

    def skip(path: str, detail: str) -> None:
        skipped.append(_entry(path, "skipped", detail))

    try:
        with tarfile.open(fileobj=snapshot) as outer:
            sockets = outer.extractfile("snapshot/sockets")
            for raw in (sockets.read() if sockets else b"").split(b"\0"):
                if raw:
                    skip(_member_path(raw.decode("utf-8", "surrogateescape"), top) or "?", "a socket")
            errors = outer.extractfile("snapshot/errors")
            for line in (errors.read() if errors else b"").decode("utf-8", "surrogateescape").splitlines():
                # "tar: ./<folder>/<path>: Cannot open: Permission denied"
                where, _, why = line.removeprefix("tar: ").rpartition(": ")
                path = _member_path(where.split(": ")[0], top)
                if path is not None and why not in _TAR_NOTES:
                    unread.append(_entry(path, "failed", f"could not be read ({why})"))
            files = outer.extractfile("snapshot/files.tar")
            if files is None:
                raise EngineError("Reading the files to copy failed: the engine sent no snapshot.")
            with (
                tarfile.open(fileobj=files) as source,
                tarfile.open(fileobj=incoming, mode="w", format=tarfile.GNU_FORMAT) as target,
            ):
                for member in source:
                    path = _member_path(member.name, top)
                    if path is None:
                        skip(member.name, "a name outside the folder")
                    elif path == "" and not member.isdir():
                        raise EngineError(f"/data/{top} is not a folder.")
                    elif member.isdir():
                        _add(target, f"incoming/{path}".rstrip("/"), member, None)
                    elif member.isfile() or member.islnk():
                        content = source.extractfile(member)  # a hard link: the file it links to
                        if content is None:
                            skip(path, "a link to a file that is not in the folder")
                            continue
                        kept[path.encode("utf-8", "surrogateescape")] = _add(
                            target, f"incoming/{path}", member, content
                        )
                    else:
                        skip(path, _KINDS_SKIPPED.get(member.type, "not a regular file"))
    except tarfile.TarError as exc:
        raise EngineError(f"Reading the files to copy failed: the snapshot is damaged ({exc}).") from exc
    incoming.seek(0)
    return kept, skipped + unread


def _entry(path: str, status: str, detail: str) -> dict[str, str]:
    """A report entry for a file that was not copied."""
    return {"path": shown(path), "status": status, "detail": detail, "source_sha256": "", "sha256": ""}


class _Hashed:
    """Reads through a file, hashing what passes."""

    def __init__(self, source: BinaryIO):
        self.source, self.digest = source, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


def _add(target: tarfile.TarFile, name: str, member: tarfile.TarInfo, content: BinaryIO | None) -> str:
    """One folder or file into the clean tar, owned by the user; the file's sha256."""
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 1000
    info.mtime = member.mtime
    if content is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        target.addfile(info)
        return ""
    # No set-id bits; always readable by its owner, so the helper can copy it.
    info.size, info.mode = member.size, (member.mode & 0o777) | 0o600
    hashed = _Hashed(content)
    target.addfile(info, hashed)  # type: ignore[arg-type]
    return hashed.digest.hexdigest()


def _merged(kept: dict[bytes, str], report: list[tuple[str, str, str, bytes]]) -> list[dict[str, str]]:
    """The copy helper's records, with the source's checksum as the worker read it."""
    out = []
    for status, copied_sum, written_sum, written in report:
        # A file written beside is "<path>.<n>": its source is the path without the suffix.
        source = written.rsplit(b".", 1)[0] if status == "beside" else written
        entry = {
            "path": shown(written),
            "status": status,
            "source_sha256": kept.get(source, copied_sum),
            "sha256": written_sum,
        }
        if status == "failed":
            entry["detail"] = "could not be written (a folder or another file has its name)"
        elif kept.get(source) not in (None, copied_sum):
            entry["detail"] = "changed on the way"
        out.append(entry)
    return out
