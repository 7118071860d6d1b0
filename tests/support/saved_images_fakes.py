"""A fake engine for saving tests: the real DockerBackend with only its saving calls replaced."""

from __future__ import annotations

from tests.support.fakes import use_engine
from workspaces.engine.docker_backend import DockerBackend
from workspaces.models import Image, User
from workspaces.services import saved_images

MiB = 1024**2


class FakeSavingEngine(DockerBackend):
    """Never talks to Docker for diff, commit, sizes and image removal; records what it was asked.

    ``fail`` maps a method name to the exception it raises; ``during_commit``
    runs in the middle of a commit (something else happening meanwhile).
    """

    def __init__(self, prefix: str = "lattice", **kwargs) -> None:
        super().__init__(prefix=prefix, **kwargs)
        self.calls: list[tuple] = []
        self.fail: dict[str, BaseException] = {}
        self.changes: list[dict[str, str]] = [{"path": "/home/user/notes.txt", "kind": "added"}]
        self.size = 300 * MiB
        self.parent_size = 200 * MiB
        self.images: list[dict] = []
        self.during_commit = None

    def _call(self, name: str, *args) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def diff(self, workspace_id, container):
        self._call("diff", workspace_id, container)
        return list(self.changes)

    def commit(self, workspace_id, container, reference, labels):
        self._call("commit", workspace_id, container, reference, labels)
        if self.during_commit:
            self.during_commit()
        return {"id": "sha256:" + "1" * 64, "size": self.size, "reference": reference}

    def image_size(self, reference):
        self._call("image_size", reference)
        return self.parent_size

    def remove_image(self, reference):
        self._call("remove_image", reference)

    def list_workspaces(self):
        self._call("list_workspaces")
        return {}

    def list_images(self):
        self._call("list_images")
        return list(self.images)

    def called(self, name: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == name]


def use_fake_engine(settings) -> FakeSavingEngine:
    """Make the fake this process's engine (through the real seam, engine_access.backend)."""
    return use_engine(settings, FakeSavingEngine)


def make_saved_image(
    owner: User, name: str, kind: str = "app", parent: Image | None = None, version: int = 1, **extra
) -> Image:
    """A saved image's row, named as saved_images.save names it (ready unless ``extra`` says otherwise)."""
    fields = {
        "slug": f"{owner.username}/{name}:{version}",
        "reference": f"{saved_images.repository_for(owner, name)}:{version}",
        "title": f"{name} (v{version})",
        **extra,
    }
    return Image.objects.create(kind=kind, owner=owner, name=name, version=version, parent=parent, **fields)
