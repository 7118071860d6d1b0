"""Fixtures for the engine tests: the real Docker engine under its own prefix,
and cleanup of everything made under it.

No Django here. When Docker does not answer, these tests fail: an engine that
cannot be reached is a broken machine, not a reason to skip.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.leftovers import run_prefix
from workspaces.engine import ContainerSpec, WorkspaceSpec
from workspaces.engine.docker_backend import DockerBackend

# Not the Django suite's prefix: each suite's cleanup removes every workspace
# under its prefix, so the two could not share one.
PREFIX = run_prefix("eng")
SOCKET_ROOT = Path(__file__).resolve().parents[2] / "var" / "test" / "displays"
DESKTOP = "lattice/desktop:latest"
IDE = "lattice/ide:latest"
PASSWORD = "ctl-pw12"
VIEW_PASSWORD = "view-pw1"


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result.stdout


def inspect(kind: str, name: str) -> dict:
    return json.loads(docker(kind, "inspect", name))[0]


def exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True, check=False).returncode == 0


def prefixed(kind: str) -> list[str]:
    """Names of every container, network or volume made under the test prefix."""
    args = {"container": ["ps", "-a"], "network": ["network", "ls"], "volume": ["volume", "ls"]}[kind]
    field = "{{.Names}}" if kind == "container" else "{{.Name}}"
    return docker(*args, "--format", field, "--filter", f"label=lattice.prefix={PREFIX}").split()


@pytest.fixture(scope="session")
def backend() -> Iterator[DockerBackend]:
    engine = DockerBackend(prefix=PREFIX, socket_root=str(SOCKET_ROOT))
    engine.api.ping()  # fails the test run when Docker is not reachable
    for image in (DESKTOP, IDE):
        assert exists("image", image), f"{image} is missing: run scripts/build-images"
    yield engine
    for workspace_id in engine.list_workspaces():
        engine.remove(workspace_id)
    # The engine never removes data volumes; the tests made these, so they do.
    for volume in prefixed("volume"):
        docker("volume", "rm", "-f", volume, check=False)


@pytest.fixture
def make_spec() -> Callable[..., WorkspaceSpec]:
    def make(apps: tuple[str, ...] = ("ide",), owner: str | None = None, **kw: object) -> WorkspaceSpec:
        # Owners with upper case and symbols exercise the name escaping.
        kw.setdefault("vnc_password", PASSWORD)
        kw.setdefault("vnc_view_password", VIEW_PASSWORD)
        return WorkspaceSpec(
            workspace_id=kw.pop("workspace_id", None) or f"t{secrets.token_hex(4)}",
            owner=owner or f"Test.User+{secrets.token_hex(3)}@example.org",
            # Random, so that workspaces of one run share no data volume unless a test says so.
            owner_id=kw.pop("owner_id", None) or secrets.randbelow(10**9) + 1,
            display=kw.pop("display", None) or ContainerSpec("display", DESKTOP, "display"),
            apps=tuple(ContainerSpec(a, IDE) for a in apps),
            **kw,
        )

    return make


@pytest.fixture
def workspace(backend: DockerBackend, make_spec) -> Iterator[WorkspaceSpec]:
    """A running desktop + ide workspace of its own, removed afterwards."""
    spec = make_spec()
    backend.start(spec)
    yield spec
    backend.remove(spec.workspace_id)


@pytest.fixture
def desktop(backend: DockerBackend, make_spec) -> Iterator[WorkspaceSpec]:
    """A running display without apps, removed afterwards."""
    spec = make_spec(apps=())
    backend.start(spec)
    yield spec
    backend.remove(spec.workspace_id)
