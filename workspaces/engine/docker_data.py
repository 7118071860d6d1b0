"""Docker side of saving containers as images and of moving files between data volumes.

A mixin of DockerBackend (it uses the backend's ``api``, ``prefix`` and error
translation), kept apart so the start/stop code stays readable.
"""

from __future__ import annotations

import posixpath
from typing import Any

import docker.errors

from . import names
from .docker_catalog import split_reference
from .errors import ContainerNotFound, EngineError, ImageNotFound

# The engine's diff kinds.
_KINDS = {0: "changed", 1: "added", 2: "deleted"}
# Mounted, not part of the container's own filesystem, or rewritten at every start.
_NOT_SAVED = ("/data", "/tmp/.X11-unix", "/dev", "/proc", "/sys", "/run", "/tmp/.X0-lock")  # noqa: S108
# Container labels that describe one workspace: a saved image must not carry them.
_WORKSPACE_LABELS = (
    "lattice.prefix",
    "lattice.workspace",
    "lattice.owner",
    "lattice.role",
    "lattice.container",
)
# Secrets the display gets at create time; a saved image must not keep them.
_SECRET_ENV = ("LATTICE_VNC_PASSWORD", "LATTICE_VNC_VIEW_PASSWORD")

# Copies src (a folder of one data volume) into dst (a folder of another)
# without replacing anything: a file whose name is taken, with other content,
# is written beside it as "<name>.1", "<name>.2", … Prints one line per file:
# "<status> <sha256 of source> <sha256 of what was written> <path>".
COPY_SCRIPT = r"""
set -euo pipefail
src=$(realpath -m "/src/$1"); dst=$(realpath -m "/data/$2")
case "$src/" in /src/*) ;; *) echo "ERROR the source folder is outside /data" >&2; exit 3;; esac
case "$dst/" in /data/*) ;; *) echo "ERROR the target folder is outside /data" >&2; exit 3;; esac
[ -d "$src" ] || { echo "ERROR there is no folder /data/$1" >&2; exit 4; }
mkdir -p "$dst"
cd "$src"
find . -mindepth 1 -type d -print0 | while IFS= read -r -d '' d; do mkdir -p "$dst/$d"; done
find . -type f -print0 | while IFS= read -r -d '' f; do
  target="$dst/${f#./}"
  status=copied
  if [ -e "$target" ]; then
    if cmp -s "$f" "$target"; then
      status=same
    else
      n=1; while [ -e "$target.$n" ]; do n=$((n+1)); done
      target="$target.$n"; status=beside
    fi
  fi
  [ "$status" = same ] || cp -p -- "$f" "$target"
  a=$(sha256sum < "$f" | cut -c1-64); b=$(sha256sum < "$target" | cut -c1-64)
  printf '%s %s %s %s\n' "$status" "$a" "$b" "${target#"$dst"/}"
done
"""


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
        from .docker_backend import _translated

        with _translated(f"Listing the changes of {container}"):
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
        from .docker_backend import _translated

        repository, tag = split_reference(reference)
        changes = [f"ENV {name}=" for name in _SECRET_ENV]
        changes += [f'LABEL {key}=""' for key in _WORKSPACE_LABELS]
        changes += [f"LABEL {key}={_quote(value)}" for key, value in labels.items()]
        with _translated(f"Saving {container}"):
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
        from .docker_backend import _translated

        with _translated(f"Reading image {reference}"):
            try:
                return int(self.api.inspect_image(reference).get("Size", 0))
            except docker.errors.NotFound as exc:
                raise ImageNotFound(f"The image {reference} is not on this engine.") from exc

    def remove_image(self, reference: str) -> None:
        """Remove one tag; the layers go when nothing else uses them. Missing is success."""
        from .docker_backend import _translated

        with _translated(f"Removing image {reference}"):
            try:
                self.api.remove_image(reference, noprune=False)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise EngineError(f"The image {reference} is still used by a container.") from exc
                raise

    def copy_data(self, src_owner: str, src_path: str, dst_owner: str, dst_path: str) -> list[dict[str, str]]:
        """Copy a folder of one user's data volume into another's, replacing nothing.

        Runs a short-lived, hardened container with the source volume read-only
        and no network. Returns one entry per file with both checksums.
        """
        from .docker_backend import _translated

        for path in (src_path, dst_path):
            if posixpath.isabs(path) or ".." in path.split("/") or "\0" in path:
                raise EngineError(f"{path!r} must be a folder inside /data, like 'lessons/week1'.")
        src_volume = names.data_volume(self.prefix, src_owner)
        dst_volume = names.data_volume(self.prefix, dst_owner)
        if not self.data_volume_exists(src_owner):
            raise EngineError(f"{src_owner} has no files yet: there is no /data/{src_path}.")
        with _translated("Copying files"):
            # The same labelled volume a workspace start would make.
            self._ensure_volume(dst_volume, self.data_volume_labels(dst_owner))
            # The target at /data, where the image has it owned by the user:
            # a volume made here first gets that ownership.
            container = self.file_ops_container(
                {src_volume: {"bind": "/src", "mode": "ro"}, dst_volume: {"bind": "/data", "mode": "rw"}},
                command=["bash", "-c", COPY_SCRIPT, "copy", src_path, dst_path],
            )
            try:
                self.api.start(container)
                code = self.api.wait(container, timeout=300)["StatusCode"]
                out = self.api.logs(container, stdout=True, stderr=False).decode(errors="replace")
                err = self.api.logs(container, stdout=False, stderr=True).decode(errors="replace")
            finally:
                self.api.remove_container(container, force=True)
        if code != 0:
            reason = err.strip().removeprefix("ERROR ") or f"the copy ended with code {code}"
            raise EngineError(f"Copying files failed: {reason}")
        files = []
        for line in out.splitlines():
            status, source_sum, target_sum, path = line.split(" ", 3)
            files.append({"path": path, "status": status, "source_sha256": source_sum, "sha256": target_sum})
        return files


def _quote(value: str) -> str:
    """A LABEL value for a Dockerfile-style change line."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
