"""Docker side of the admin catalog: build, pull and tag images.

A mixin of DockerBackend, like docker_data.py. Builds and pulls report their
log line by line through a callback so the admin's page can show it live.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import docker.errors
import docker.utils
import requests
import urllib3

from .errors import EngineError, ImageNotFound

Log = Callable[[str], None]
_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$")
MAX_UPLOAD_BYTES = 200 * 1024**2
MAX_UNPACKED_BYTES = 512 * 1024**2
MAX_FILES = 20_000
# A tar's extended headers (GNU long names and link names, pax records) are
# read whole into memory by tarfile: each is capped before it is read, and
# each counts as a member and its bytes as unpacked bytes.
MAX_HEADER_BYTES = 64 * 1024
MAX_PATH = 4096
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)
# What a pull reports per layer; other events (the tag's own "Pulling from") are not layers.
_LAYER_STATUSES = {
    "Pulling fs layer",
    "Waiting",
    "Downloading",
    "Verifying Checksum",
    "Download complete",
    "Extracting",
    "Pull complete",
    "Already exists",
}


class BuildFailed(EngineError):
    """A build stopped; the message names the failing step and the error."""

    def __init__(self, message: str, step: str = "", error: str = "") -> None:
        super().__init__(message)
        self.step, self.error = step, error


class BadContext(EngineError):
    """An upload that cannot be a build context; the message says why."""


# --- build contexts ------------------------------------------------------------


@dataclass
class _Member:
    name: str  # inside the context, cleaned
    is_dir: bool
    executable: bool
    size: int
    mtime: float
    open: Callable[[], BinaryIO]


def _clean(name: str) -> str:
    """The path inside the context; BadContext for one that could leave it."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise BadContext(f"The archive has a path longer than {MAX_PATH} bytes ({name[:60]}…).")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BadContext(f"The archive has an absolute path ({name}); a build context holds relative ones.")
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if ".." in parts:
        raise BadContext(f"The archive has a path with '..' ({name}); it cannot be a build context.")
    return "/".join(parts)


def _limits(count: int, total: int) -> None:
    if count > MAX_FILES:
        raise BadContext(f"The archive has more than {MAX_FILES} files; a build context should be small.")
    if total > MAX_UNPACKED_BYTES:
        raise BadContext(f"The archive unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MiB.")


class _CountedTarInfo(tarfile.TarInfo):
    """A header that counts, and caps, the extended headers before tarfile reads them whole."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type in _EXTENDED:
            if self.size > MAX_HEADER_BYTES:
                raise BadContext(
                    f"The archive has a long-name or pax header of {self.size} bytes "
                    f"(at most {MAX_HEADER_BYTES // 1024} KiB)."
                )
            # Set here too: tarfile reads the first member while it opens the archive.
            seen = archive.__dict__.setdefault("lattice_seen", [0, 0])
            seen[0], seen[1] = seen[0] + 1, seen[1] + tarfile.BLOCKSIZE + self.size
            _limits(*seen)
        return super()._proc_member(archive)


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    # [members and extended headers, bytes]: the headers' share is counted as they are read.
    seen = archive.__dict__.setdefault("lattice_seen", [0, 0])
    with tempfile.TemporaryDirectory() as nowhere:  # empty: the data filter's checks stay lexical
        for member in archive:  # one header at a time: stops at the first one over a limit
            if member.issym() or member.islnk():
                raise BadContext(
                    f"The archive has a link ({member.name}); upload the file itself, links are not accepted."
                )
            if not (member.isdir() or member.isfile()) or member.issparse():
                raise BadContext(f"The archive has a device or pipe ({member.name}); only files and folders.")
            seen[0], seen[1] = seen[0] + 1, seen[1] + tarfile.BLOCKSIZE + member.size
            _limits(*seen)
            name = _clean(member.name)
            try:  # Python's own rules for unpacking untrusted archives, on top of ours
                tarfile.data_filter(member, nowhere)
            except tarfile.FilterError as exc:
                raise BadContext(f"The archive has a member that cannot be unpacked safely: {exc}") from exc
            yield _Member(
                name,
                member.isdir(),
                bool(member.mode & 0o111),
                member.size,
                member.mtime,
                lambda member=member: archive.extractfile(member),
            )


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    count = total = 0
    for info in archive.infolist():
        mode = info.external_attr >> 16  # unix mode, when the zip was made on unix
        if mode & 0o170000 == 0o120000:
            raise BadContext(
                f"The archive has a link ({info.filename}); upload the file itself, links are not accepted."
            )
        # A member's declared size caps what reading it returns (zipfile checks it).
        count, total = count + 1, total + info.file_size
        _limits(count, total)
        yield _Member(
            _clean(info.filename),
            info.is_dir(),
            bool(mode & 0o111),
            info.file_size,
            time.mktime((*info.date_time, 0, 0, -1)),
            lambda info=info: archive.open(info),
        )


def context_from_upload(upload: BinaryIO, filename: str, out: BinaryIO) -> int:
    """Write a tar build context from an uploaded .tar(.gz) or .zip to ``out``; the file count.

    The archive must hold a Dockerfile at its top, or in its single top-level
    folder (as archives made by "compress this folder" are). Only files and
    folders: links, absolute paths and '..' are refused. Modes become 0644,
    or 0755 for what was executable, so every file is readable in the image.
    """
    upload.seek(0, io.SEEK_END)
    if upload.tell() > MAX_UPLOAD_BYTES:
        raise BadContext(f"The upload is over {MAX_UPLOAD_BYTES // 1024**2} MiB.")
    upload.seek(0)
    try:
        if filename.lower().endswith(".zip"):
            archive: Any = zipfile.ZipFile(upload)
            members_of = _zip_members
        else:
            archive = tarfile.open(fileobj=upload, mode="r:*", tarinfo=_CountedTarInfo)  # noqa: SIM115 (closed below)
            members_of = _tar_members
        with archive:
            members = [m for m in members_of(archive) if m.name and not m.name.startswith("__MACOSX")]
            return _write_context(members, out)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zipfile.LargeZipFile) as exc:
        raise BadContext(f"Cannot read {filename}: use a .tar, .tar.gz or .zip archive ({exc}).") from exc


def _write_context(members: list[_Member], out: BinaryIO) -> int:
    files = {m.name for m in members if not m.is_dir}
    top = ""
    if "Dockerfile" not in files:
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) == 1 and f"{next(iter(tops))}/Dockerfile" in files:
            top = next(iter(tops)) + "/"
        else:
            raise BadContext("The archive has no Dockerfile at its top level.")
    written = 0
    with tarfile.open(fileobj=out, mode="w") as context:
        for member in members:
            name = member.name.removeprefix(top) if top else member.name
            if top and (member.name + "/") == top:
                continue  # the top folder itself
            info = tarfile.TarInfo(name)
            info.mtime = member.mtime
            if member.is_dir:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                context.addfile(info)
                continue
            info.size, info.mode = member.size, 0o755 if member.executable else 0o644
            with member.open() as content:
                context.addfile(info, content)
            written += 1
    return written


def context_from_folder(folder) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as context:
        for path in sorted(folder.rglob("*")):
            context.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return out.getvalue()


# --- references ----------------------------------------------------------------


def split_reference(reference: str) -> tuple[str, str]:
    """(repository, tag) or (repository, "sha256:…") for a digest; no tag means latest.

    "127.0.0.1:5000/course/python" has no tag: the colon belongs to the registry.
    """
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        name = repository.rsplit("/", 1)[-1]
        if ":" in name:  # name:tag@digest: the digest decides
            repository = repository.rsplit(":", 1)[0]
        return repository, digest
    if ":" in reference.rsplit("/", 1)[-1]:
        repository, tag = reference.rsplit(":", 1)
        return repository, tag
    return reference, "latest"


def full_reference(reference: str) -> str:
    """The reference with its tag (":latest" when none) or digest, as the engine names it."""
    repository, ref = split_reference(reference)
    return f"{repository}@{ref}" if ":" in ref else f"{repository}:{ref}"


# --- operations ----------------------------------------------------------------


class DockerCatalogOps:
    api: docker.APIClient

    def build(
        self,
        context: bytes | BinaryIO,
        reference: str,
        log: Log,
        buildargs: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        *,
        memory: str | int = "2g",
        cpus: int = 1,
        timeout: float = 1800,
    ) -> dict[str, Any]:
        """Build ``reference`` from a tar context, streaming the log; BuildFailed names the step.

        Each build step's container gets ``memory`` and ``cpus`` CPUs. The
        whole build gets ``timeout`` seconds; a step that prints nothing for
        that long ends it too (no worker pool enforces a task time limit).
        """
        from .docker_backend import _translated

        deadline = time.monotonic() + timeout
        step = "before the first step"

        def too_long() -> BuildFailed:
            return BuildFailed(
                f"The build took longer than {timeout:.0f} s and was stopped at {step}.",
                step=step,
                error="time limit",
            )

        memory = docker.utils.parse_bytes(memory) if isinstance(memory, str) else memory
        limits = {"memory": memory, "memswap": memory, "cpusetcpus": f"0-{cpus - 1}"}
        fileobj = io.BytesIO(context) if isinstance(context, bytes | bytearray) else context
        with _translated("Building the image"):
            stream = self.api.build(
                fileobj=fileobj,
                custom_context=True,
                tag=reference,
                rm=True,
                forcerm=True,
                decode=True,
                buildargs=buildargs or {},
                labels=labels or {},
                pull=False,
                container_limits=limits,
                timeout=timeout,
            )
            try:
                for chunk in stream:
                    if time.monotonic() > deadline:
                        raise too_long()
                    for line in (chunk.get("stream") or "").splitlines():
                        if line.strip():
                            log(line)
                            match = _STEP.match(line.strip())
                            if match:
                                step = f"step {match.group(1)} ({match.group(2)})"
                    if "error" in chunk:
                        error = chunk["error"].strip()
                        log(error)
                        raise BuildFailed(f"The build failed at {step}: {error}", step=step, error=error)
            except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
                if time.monotonic() >= deadline - 1:
                    raise too_long() from exc
                raise EngineError(
                    f"The build stopped at {step}: the engine's answer broke off ({exc})."
                ) from exc
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # hang up: the engine cancels a build nobody reads
            info = self.api.inspect_image(reference)
        return {"id": info["Id"], "size": info.get("Size", 0), "labels": info["Config"].get("Labels") or {}}

    def pull(
        self, reference: str, progress: Callable[[int, str], None], *, timeout: float = 1800
    ) -> dict[str, Any]:
        """Pull from a registry, reporting how far the layers are (never going backwards)."""
        from .docker_backend import _translated

        reference = full_reference(reference)
        deadline = time.monotonic() + timeout
        layers: dict[str, float] = {}  # layer id -> 0..1
        best, last_status = 0, None
        with _translated(f"Pulling {reference}"):
            try:
                for event in self.api.pull(reference, stream=True, decode=True):
                    if time.monotonic() > deadline:
                        raise EngineError(f"Pulling {reference} took longer than {timeout:.0f} s; stopped.")
                    if "error" in event:
                        raise EngineError(f"Pulling {reference} failed: {event['error']}")
                    status = event.get("status", "")
                    if event.get("id") and status in _LAYER_STATUSES:
                        layers[event["id"]] = max(layers.get(event["id"], 0.0), _layer_done(event))
                    percent = min(99, int(100 * sum(layers.values()) / len(layers))) if layers else 0
                    if percent > best or status != last_status:
                        best, last_status = max(best, percent), status
                        progress(best, status)
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The registry has no {reference}.") from exc
            info = self.api.inspect_image(reference)
        progress(100, "Pulled")
        return {"id": info["Id"], "size": info.get("Size", 0), "labels": info["Config"].get("Labels") or {}}

    def tag(self, source: str, reference: str) -> None:
        from .docker_backend import _translated

        repository, tag = split_reference(reference)
        with _translated(f"Tagging {reference}"):
            try:
                self.api.tag(source, repository, tag=tag)
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The image {source} is not on this engine.") from exc

    def image_exists(self, reference: str) -> bool:
        from .docker_backend import _translated

        with _translated(f"Reading image {reference}"):
            try:
                self.api.inspect_image(reference)
            except docker.errors.NotFound:
                return False
        return True


def _layer_done(event: dict) -> float:
    """How far one layer is: downloading is the first 70 %, extracting the rest."""
    status = event.get("status", "")
    detail = event.get("progressDetail") or {}
    fraction = detail["current"] / detail["total"] if detail.get("total") and "current" in detail else 0
    if status == "Downloading":
        return 0.7 * min(fraction, 1)
    if status in ("Verifying Checksum", "Download complete"):
        return 0.7
    if status == "Extracting":
        return 0.7 + 0.3 * min(fraction, 1)
    if status in ("Pull complete", "Already exists"):
        return 1.0
    return 0.0
