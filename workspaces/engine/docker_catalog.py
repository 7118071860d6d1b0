"""Docker side of the admin catalog: build, pull and tag images.

A mixin of DockerBackend, like docker_data.py. Builds and pulls report their
log line by line through a callback so the admin's page can show it live.
Build contexts are made in build_context.py; references are parsed in names.py.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import docker.errors
import docker.utils
import requests
import urllib3

from .docker_common import translated
from .errors import BuildFailed, EngineError, ImageNotFound
from .names import full_reference, split_reference

Log = Callable[[str], None]
_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$")
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
        with translated("Building the image"):
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
        reference = full_reference(reference)
        deadline = time.monotonic() + timeout
        layers: dict[str, float] = {}  # layer id -> 0..1
        best, last_status = 0, None
        with translated(f"Pulling {reference}"):
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
        repository, tag = split_reference(reference)
        with translated(f"Tagging {reference}"):
            try:
                self.api.tag(source, repository, tag=tag)
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The image {source} is not on this engine.") from exc

    def image_exists(self, reference: str) -> bool:
        with translated(f"Reading image {reference}"):
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
