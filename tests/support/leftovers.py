"""Each test run works under an engine prefix of its own (``latticet<pid>``), so
two runs at once never remove each other's workspaces. What a run that was
killed left behind is removed by the next one: any object under a test prefix
whose process is gone.
"""

from __future__ import annotations

import os
import re
import subprocess

_TEST_PREFIX = re.compile(r"^lattice(?:t|eng)(\d+)$")


def run_prefix(kind: str = "t") -> str:
    return f"lattice{kind}{os.getpid()}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _docker(*args: str) -> list[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return result.stdout.split("\n") if result.returncode == 0 else []


def stale_prefixes() -> set[str]:
    """Test prefixes on the engine whose run has ended."""
    found = set()
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        for line in _docker(
            *kind, "--format", '{{.Label "lattice.prefix"}}', "--filter", "label=lattice.prefix"
        ):
            match = _TEST_PREFIX.match(line.strip())
            if match and not alive(int(match.group(1))):
                found.add(line.strip())
    for line in _docker("image", "ls", "--format", "{{.Repository}}"):
        match = _TEST_PREFIX.match(line.split("/", 1)[0])
        if match and not alive(int(match.group(1))):
            found.add(match.group(0))
    return found


def remove_everything_under(prefix: str) -> None:
    """Containers, networks, volumes (data too: tests made them) and images of one test prefix."""
    label = f"label=lattice.prefix={prefix}"
    containers = [c for c in _docker("ps", "-aq", "--filter", label) if c]
    if containers:
        _docker("rm", "-f", *containers)
    networks = [n for n in _docker("network", "ls", "-q", "--filter", label) if n]
    if networks:
        _docker("network", "rm", *networks)
    volumes = [v for v in _docker("volume", "ls", "-q", "--filter", label) if v]
    if volumes:
        _docker("volume", "rm", "-f", *volumes)
    images = [
        i
        for i in _docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
        if i.startswith(f"{prefix}/")
    ]
    if images:
        _docker("rmi", "-f", *images)


def remove_stale() -> None:
    for prefix in stale_prefixes():
        remove_everything_under(prefix)
