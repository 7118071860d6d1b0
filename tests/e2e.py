"""Helpers for end-to-end tests against the real engine, worker and proxy."""

from __future__ import annotations

import json
import subprocess
import time

from django.conf import settings

from workspaces.models import Workspace


def wait_for_state(workspace_id: int, states: set[str], timeout: float = 90) -> Workspace:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws = Workspace.objects.filter(pk=workspace_id).first()
        if ws is not None and ws.state in states:
            return ws
        time.sleep(0.1)
    raise AssertionError(
        f"workspace {workspace_id} not in {states} after {timeout} s: {ws and (ws.state, ws.message)}"
    )


def wait_until_gone(workspace_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while Workspace.objects.filter(pk=workspace_id).exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"workspace {workspace_id} still exists after {timeout} s")
        time.sleep(0.1)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name))[0]


def engine_id(workspace_id: int) -> str:
    return Workspace.objects.get(pk=workspace_id).engine_id


def containers_of(engine_id: str, all_states: bool = True) -> list[str]:
    flags = ["-a"] if all_states else []
    out = docker(
        "ps",
        *flags,
        "--format",
        "{{.Names}}",
        "--filter",
        f"label=lattice.workspace={engine_id}",
        "--filter",
        f"label=lattice.prefix={settings.LATTICE_ENGINE_PREFIX}",
    )
    return out.split()


def networks_of(engine_id: str) -> list[str]:
    out = docker(
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        f"label=lattice.workspace={engine_id}",
        "--filter",
        f"label=lattice.prefix={settings.LATTICE_ENGINE_PREFIX}",
    )
    return out.split()


def data_volumes() -> list[str]:
    out = docker(
        "volume",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        "label=lattice.role=data",
        "--filter",
        f"label=lattice.prefix={settings.LATTICE_ENGINE_PREFIX}",
    )
    return out.split()


def never_ready_image() -> str:
    """A display image whose VNC server never answers (it only sleeps)."""
    tag = "latticetest/never-ready:latest"
    dockerfile = 'FROM lattice/base:latest\nLABEL lattice.kind=display\nENTRYPOINT ["sleep", "infinity"]\n'
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    return tag


def wait_for_job(job_id: int, timeout: float = 300):
    from workspaces.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.state in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout} s")
