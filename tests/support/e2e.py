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


def image_exists(reference: str) -> bool:
    """Whether the engine has an image by this reference."""
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True).returncode == 0


def docker_build(reference: str, dockerfile: str) -> None:
    """Build an image from a Dockerfile given as text (no context)."""
    subprocess.run(
        ["docker", "build", "-q", "-t", reference, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )


def never_ready_image() -> str:
    """A display image whose VNC server never answers (it only sleeps)."""
    tag = f"{settings.LATTICE_ENGINE_PREFIX}/never-ready:latest"  # removed with the run's other objects
    docker_build(
        tag, 'FROM lattice/base:latest\nLABEL lattice.kind=display\nENTRYPOINT ["sleep", "infinity"]\n'
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


def launch(client, display: str = "desktop", apps=("ide",)) -> int:
    """Launch through the API (as the client's user); the new workspace's id."""
    response = client.post("/api/workspaces/", {"display": display, "apps": list(apps)}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def running(client, display: str = "desktop", apps=("ide",)) -> int:
    """Launch and wait until the workspace runs; its id."""
    ws = wait_for_state(launch(client, display, apps), {"running", "failed"})
    assert ws.state == "running", ws.message
    return ws.pk


def sh(engine, ws_id: int, container: str, script: str) -> str:
    """Run a shell script as the user in one of the workspace's containers; its output."""
    code, out = engine.exec(engine_id(ws_id), container, ["sh", "-c", script])
    assert code == 0, out
    return out.decode()


X_ENV = "DISPLAY=:0 XAUTHORITY=/tmp/.X11-unix/Xauthority"


def x_windows(engine, ws_id: int) -> str:
    """Every window on the display, as the X server knows them (mapped or not)."""
    return sh(engine, ws_id, "display", f"{X_ENV} xwininfo -root -tree")


def wait_for_window(engine, ws_id: int, name: str, timeout: float = 30) -> None:
    """Until a window whose name matches ``name`` (a regular expression) is shown on the display."""
    shown = f"{X_ENV} xdotool search --onlyvisible --name '{name}' getwindowname %@ 2>/dev/null || true"
    deadline = time.monotonic() + timeout
    while not sh(engine, ws_id, "display", shown).strip():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {name!r} window shown after {timeout} s:\n{x_windows(engine, ws_id)}")
        time.sleep(0.3)


def pointer(engine, ws_id: int) -> tuple[int, int]:
    """Where the display's X server has the pointer."""
    out = sh(
        engine,
        ws_id,
        "display",
        f"{X_ENV} xdotool getmouselocation --shell",
    )
    values = dict(line.split("=") for line in out.split())
    return int(values["X"]), int(values["Y"])
