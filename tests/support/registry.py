"""A real image registry for tests: Debian's docker-registry on a free port."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import Process, free_port, wait_for_port

CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@contextmanager
def local_registry():
    """Yield "127.0.0.1:<port>"; the engine may push to and pull from it (loopback needs no TLS)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: run `make test` (it installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="lattice-registry-"))
    port = free_port()
    (workdir / "config.yml").write_text(CONFIG.format(root=workdir / "data", port=port))
    process = Process(
        "registry", [binary, "serve", str(workdir / "config.yml")], env={"PATH": "/usr/bin:/bin"}
    )
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def push(source: str, reference: str) -> None:
    subprocess.run(["docker", "tag", source, reference], check=True, capture_output=True)
    subprocess.run(["docker", "push", reference], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", reference], check=True, capture_output=True)
