"""Fake engines for the admin catalog: the real DockerBackend with only its image calls replaced.

``FakeCatalogEngine`` keeps tags in a dict; subclasses fail in the ways a
real build or pull can (a crash, a broken step, a refused pull).
"""

from __future__ import annotations

from tests.support.fakes import use_engine
from workspaces.engine.base import EngineError, ImageNotFound
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.errors import BuildFailed
from workspaces.engine.names import full_reference

MiB = 1024**2
APP_LABELS = {"lattice.kind": "app", "lattice.title": "Built app"}


class FakeCatalogEngine(DockerBackend):
    """Tags in ``self.tags`` (reference -> {"id", "labels", "size"}); every call is recorded."""

    def __init__(self, prefix: str = "lattice", **kwargs) -> None:
        super().__init__(prefix=prefix, **kwargs)
        self.tags: dict[str, dict] = {
            "lattice/base:latest": {"id": "sha256:base", "labels": {}, "size": 80 * MiB},
        }
        self.calls: list[tuple] = []
        self.build_labels = dict(APP_LABELS)
        self.build_steps = ["FROM lattice/base:latest", "LABEL lattice.kind=app", "RUN make"]
        self.pull_labels = dict(APP_LABELS)
        self.pull_percents = [0, 10, 40, 90]
        self.fail: dict[str, BaseException] = {}

    def _call(self, name: str, *args, **kwargs) -> None:
        self.calls.append((name, *args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def called(self, name: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == name]

    def add(self, reference: str, labels: dict | None = None, size: int = 10 * MiB) -> None:
        self.tags[reference] = {"id": f"sha256:{reference}", "labels": labels or {}, "size": size}

    def image_labels(self, image):
        self._call("image_labels", image)
        if image not in self.tags:
            raise ImageNotFound(f"The image {image} is not on this engine.")
        return dict(self.tags[image]["labels"])

    def image_size(self, reference):
        self._call("image_size", reference)
        if reference not in self.tags:
            raise ImageNotFound(f"The image {reference} is not on this engine.")
        return self.tags[reference]["size"]

    def image_exists(self, reference):
        self._call("image_exists", reference)
        return reference in self.tags

    def tag(self, source, reference):
        self._call("tag", source, reference)
        if source not in self.tags:
            raise ImageNotFound(f"The image {source} is not on this engine.")
        self.tags[reference] = dict(self.tags[source])

    def remove_image(self, reference):
        self._call("remove_image", reference)
        self.tags.pop(reference, None)

    def list_images(self):
        self._call("list_images")
        return [
            {"reference": ref, "labels": t["labels"], "size": t["size"], "name": ref}
            for ref, t in sorted(self.tags.items())
            if t["labels"]
        ]

    def list_workspaces(self):
        return {}

    def build(
        self, context, reference, log, buildargs=None, labels=None, *, memory="2g", cpus=1, timeout=1800
    ):
        data = context if isinstance(context, bytes) else context.read()
        self._call(
            "build", reference, buildargs=buildargs, memory=memory, cpus=cpus, timeout=timeout, size=len(data)
        )
        for index, step in enumerate(self.build_steps, 1):
            log(f"Step {index}/{len(self.build_steps)} : {step}")
            self.step(index, step, log)
        self.tags[reference] = {"id": "sha256:built", "labels": dict(self.build_labels), "size": 120 * MiB}
        return {"id": "sha256:built", "size": 120 * MiB, "labels": dict(self.build_labels)}

    def step(self, index: int, step: str, log) -> None:
        log(" ---> ok")

    def pull(self, reference, progress, *, timeout=1800):
        self._call("pull", reference, timeout=timeout)
        for percent in self.pull_percents:
            progress(percent, "Downloading")
        self.tags[full_reference(reference)] = {
            "id": "sha256:pulled",
            "labels": dict(self.pull_labels),
            "size": 50 * MiB,
        }
        progress(100, "Pulled")
        return {"id": "sha256:pulled", "size": 50 * MiB, "labels": dict(self.pull_labels)}


class CrashingBuild(FakeCatalogEngine):
    """A bug, not an EngineError, in the middle of the build."""

    def step(self, index, step, log):
        if index == 2:
            raise RuntimeError("the disk is on fire")
        log(" ---> ok")


class BrokenStep(FakeCatalogEngine):
    """The last step fails, as a RUN that exits non-zero does."""

    def step(self, index, step, log):
        if index == len(self.build_steps):
            log("make: *** No rule to make target")
            raise BuildFailed(
                f"The build failed at step {index}/{len(self.build_steps)} ({step}): "
                "The command '/bin/sh -c make' returned a non-zero code: 2",
                step=f"step {index}/{len(self.build_steps)} ({step})",
                error="returned a non-zero code: 2",
            )
        log(" ---> ok")


class CrashingPull(FakeCatalogEngine):
    def pull(self, reference, progress, *, timeout=1800):
        progress(5, "Downloading")
        raise KeyError("progressDetail")


class RefusingPull(FakeCatalogEngine):
    def pull(self, reference, progress, *, timeout=1800):
        raise EngineError(f"Pulling {reference} failed: manifest unknown")


def use(settings, engine_class: type[FakeCatalogEngine] = FakeCatalogEngine) -> FakeCatalogEngine:
    """Make the fake this process's engine (through the real seam, engine_access.backend)."""
    return use_engine(settings, engine_class)
