"""Time from the launch API call to the first framebuffer through the display proxy.

Beside it, in the same run, the baseline: a plain `docker run` of the same
display image to its first VNC frame (direct TCP, no portal, no proxy).

    .venv/bin/python bench/spawn.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

from harness import ORIGIN, lattice

from workspaces.display.rfb import RFBClient


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def first_frame(connect) -> None:
    """Retry until the VNC server answers, then read one framebuffer update."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with connect() as rfb:
                rfb.request_frame()
                rfb.read_update()
                return
        except (OSError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def portal_launch(client, user, phases: dict[str, list[float]]) -> float:
    from workspaces.models import Workspace

    started = time.perf_counter()
    ws_id = client.post("/api/workspaces/", {"display": "desktop", "apps": []}, format="json").json()["id"]
    accepted = time.perf_counter()
    while Workspace.objects.filter(pk=ws_id).values_list("state", flat=True).first() != "running":
        time.sleep(0.005)
    running = time.perf_counter()
    grant = client.post(f"/api/workspaces/{ws_id}/display-token/", {"mode": "control"}, format="json").json()
    with RFBClient(grant["url"], grant["password"], origin=ORIGIN) as rfb:
        rfb.request_frame()
        rfb.read_update()
    elapsed = time.perf_counter() - started
    for name, value in (
        ("api_call", accepted - started),
        ("to_running", running - accepted),
        ("token_and_first_frame", started + elapsed - running),
    ):
        phases.setdefault(name, []).append(value)
    client.delete(f"/api/workspaces/{ws_id}/")
    while Workspace.objects.filter(pk=ws_id).exists():
        time.sleep(0.05)
    return elapsed


def plain_docker_run(image: str) -> float:
    started = time.perf_counter()
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "-e", "LATTICE_VNC_PASSWORD=benchpw", "--user", "1000:1000", image],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        ip = subprocess.run(
            ["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", container],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        first_frame(lambda: RFBClient.tcp(ip, 5900, "benchpw", timeout=5))
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with lattice():
        from rest_framework.test import APIClient

        from workspaces.models import Image, User

        user = User.objects.create_user("bench", password="bench-password")
        client = APIClient(HTTP_ORIGIN=ORIGIN)
        client.force_authenticate(user)
        image = Image.objects.get(slug="desktop").reference
        plain_docker_run(image)  # warm the page cache for both sides
        portal, baseline, phases = [], [], {}
        for run in range(args.runs):
            baseline.append(plain_docker_run(image))
            portal.append(portal_launch(client, user, phases))
            print(
                f"run {run + 1:2}: portal {portal[-1]:.2f} s, plain docker run {baseline[-1]:.2f} s",
                flush=True,
            )
    result = {
        "runs": args.runs,
        "portal_median_s": round(statistics.median(portal), 3),
        "portal_p95_s": round(percentile(portal, 0.95), 3),
        "docker_run_median_s": round(statistics.median(baseline), 3),
        "docker_run_p95_s": round(percentile(baseline, 0.95), 3),
    }
    result["ratio_median"] = round(result["portal_median_s"] / result["docker_run_median_s"], 2)
    result["ratio_p95"] = round(result["portal_p95_s"] / result["docker_run_p95_s"], 2)
    result["portal_phases_median_s"] = {name: round(statistics.median(v), 3) for name, v in phases.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
