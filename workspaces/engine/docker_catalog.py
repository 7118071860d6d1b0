"""Docker side of the admin catalog: build, pull and tag images.

A mixin of DockerBackend, like docker_data.py. Builds and pulls report their
log line by line through a callback so the admin's page can show it live.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors

from .errors import EngineError, ImageNotFound

Log = Callable[[str], None]
_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$")
MAX_CONTEXT_BYTES = 200 * 1024 * 1024


class BuildFailed(EngineError):
    """A build stopped; the message names the failing step and the error."""


def context_from_upload(data: bytes, filename: str) -> bytes:
    """A tar build context from an uploaded .tar(.gz) or .zip; it must hold a Dockerfile.

    A single top-level folder holding the Dockerfile is taken as the context,
    as archives made by "compress this folder" usually are.
    """
    if len(data) > MAX_CONTEXT_BYTES:
        raise EngineError(f"The upload is over {MAX_CONTEXT_BYTES // 1024**2} MiB.")
    files: dict[str, bytes] = {}
    try:
        if filename.lower().endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        files[info.filename] = archive.read(info)
        else:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        files[member.name] = archive.extractfile(member).read()
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise EngineError(f"Cannot read {filename}: use a .tar, .tar.gz or .zip archive ({exc}).") from exc
    files = {name.lstrip("./"): content for name, content in files.items()}
    if any(".." in Path(name).parts for name in files):
        raise EngineError("The archive has paths with '..'; it cannot be a build context.")
    if "Dockerfile" not in files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) == 1 and f"{next(iter(tops))}/Dockerfile" in files:
            top = next(iter(tops)) + "/"
            files = {name[len(top) :]: content for name, content in files.items() if name.startswith(top)}
        else:
            raise EngineError("The archive has no Dockerfile at its top level.")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as context:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            context.addfile(info, io.BytesIO(content))
    return out.getvalue()


def context_from_folder(folder: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as context:
        for path in sorted(folder.rglob("*")):
            context.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return out.getvalue()


class DockerCatalogOps:
    api: docker.APIClient

    def build(
        self,
        context: bytes,
        reference: str,
        log: Log,
        buildargs: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Build ``reference`` from a tar context, streaming the log; BuildFailed names the step."""
        from .docker_backend import _translated

        step = "before the first step"
        with _translated("Building the image"):
            stream = self.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                tag=reference,
                rm=True,
                forcerm=True,
                decode=True,
                buildargs=buildargs or {},
                labels=labels or {},
                pull=False,
            )
            for chunk in stream:
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if line.strip():
                            log(line)
                            match = _STEP.match(line.strip())
                            if match:
                                step = f"step {match.group(1)} ({match.group(2)})"
                if "error" in chunk:
                    log(chunk["error"].strip())
                    raise BuildFailed(f"The build failed at {step}: {chunk['error'].strip()}")
            info = self.api.inspect_image(reference)
        return {"id": info["Id"], "size": info.get("Size", 0), "labels": info["Config"].get("Labels") or {}}

    def pull(self, reference: str, progress: Callable[[int, str], None]) -> dict[str, Any]:
        """Pull from a registry, reporting the bytes done across layers as a percentage."""
        from .docker_backend import _translated

        repository, _, tag = (
            reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "")
        )
        layers: dict[str, tuple[int, int]] = {}
        with _translated(f"Pulling {reference}"):
            try:
                for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                    if "error" in event:
                        raise EngineError(f"Pulling {reference} failed: {event['error']}")
                    detail = event.get("progressDetail") or {}
                    if event.get("id") and detail.get("total"):
                        layers[event["id"]] = (detail.get("current", 0), detail["total"])
                    elif event.get("id") and event.get("status") in ("Pull complete", "Already exists"):
                        done = layers.get(event["id"], (1, 1))[1]
                        layers[event["id"]] = (done, done)
                    current = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values()) or 1
                    progress(min(99, int(100 * current / total)), event.get("status", ""))
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The registry has no {reference}.") from exc
            info = self.api.inspect_image(reference if tag else f"{reference}:latest")
        progress(100, "Pulled")
        return {"id": info["Id"], "size": info.get("Size", 0), "labels": info["Config"].get("Labels") or {}}

    def tag(self, source: str, reference: str) -> None:
        from .docker_backend import _translated

        repository, _, tag = reference.rpartition(":")
        with _translated(f"Tagging {reference}"):
            try:
                self.api.tag(source, repository, tag=tag)
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The image {source} is not on this engine.") from exc

    def image_exists(self, reference: str) -> bool:
        try:
            self.api.inspect_image(reference)
        except docker.errors.NotFound:
            return False
        return True

    def images_in_use(self) -> set[str]:
        """Image ids that some container (of anything) still uses."""
        return {c["ImageID"] for c in self.api.containers(all=True)}
