"""The disk watch's measure: what a container wrote, counted by the worker in its upper layer.

Everything in a container's layer is the student's: links to the host's
files or to /, hard links, sparse files, deep trees, names no one can print.
The count is what the files take from the host's disk, nothing outside the
layer, and it ends in bounded time.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from workspaces.engine import names
from workspaces.engine.docker_backend import DockerBackend
from workspaces.engine.docker_common import LABEL_CONTAINER, LABEL_ROLE, LABEL_WORKSPACE
from workspaces.engine.docker_usage import allocated_bytes

from .conftest import PREFIX, SOCKET_ROOT, inspect

MB = 1024**2


def container_id(workspace_id: str) -> str:
    return inspect("container", names.container(PREFIX, workspace_id, "display"))["Id"]


def measured(engine: DockerBackend, workspace_id: str) -> tuple[int | None, bool]:
    [display] = [m for m in engine.container_disk_usage() if m.workspace_id == workspace_id]
    return display.written, display.complete


def du(path: Path | str) -> int:
    """What `du` says the tree takes (one filesystem, links not followed, hard links once)."""
    out = subprocess.run(["du", "-s", "-x", "--block-size=1", str(path)], capture_output=True, check=True)
    return int(out.stdout.split()[0])


def write_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MB):
            f.write(os.urandom(MB))


@pytest.fixture
def host_file(tmp_path_factory) -> Path:
    """A big file of the host's that a student's link may name."""
    path = tmp_path_factory.mktemp("host") / "big-host-file.bin"
    write_file(path, 50 * MB)
    return path


def hostile_tree(root: Path, host_file: Path) -> None:
    write_file(root / "big.bin", 30 * MB)
    os.link(root / "big.bin", root / "big.bin.hardlink")
    with open(root / "sparse.img", "wb") as f:
        f.truncate(10 * 1024**3)  # 10 GB announced, nothing written
    os.symlink("/", root / "to-root")
    os.symlink(str(host_file), root / "to-host-file")
    os.symlink(str(host_file.parent), root / "to-host-folder")
    os.symlink("loop", root / "loop")
    weird = os.fsencode(root) + b"/new\nline \xff\xfe not utf-8"
    os.mkdir(weird)
    with open(weird + b"/inside", "wb") as f:
        f.write(b"x" * 5000)


def test_the_walk_counts_what_the_files_take_and_nothing_outside(tmp_path, host_file):
    layer = tmp_path / "layer"
    layer.mkdir()
    empty = allocated_bytes(str(layer)).allocated
    hostile_tree(layer, host_file)

    walked = allocated_bytes(str(layer))

    assert walked.complete
    # Exactly du's count: the 30 MB once, the sparse file's nothing, the links' own few bytes.
    assert walked.allocated == du(layer)
    assert 30 * MB <= walked.allocated - empty < 30 * MB + 64 * 1024


@pytest.fixture
def deep_tree(tmp_path):
    """tmp_path, removed by GNU rm at the end: pytest's own clean-up recurses and cannot."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path / "d")], check=True)


def test_deep_nesting_and_many_entries_end_the_walk_with_a_lower_bound(deep_tree):
    tmp_path = deep_tree
    deep = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # deeper than any path the kernel would take in one call
        os.mkdir("d", dir_fd=deep)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=deep)
        os.close(deep)
        deep = inner
    os.close(deep)

    walked = allocated_bytes(str(tmp_path))
    assert not walked.complete  # stopped at the depth bound, without recursing
    assert 0 < walked.allocated < du(tmp_path)

    many = tmp_path / "many"
    many.mkdir()
    for n in range(500):
        (many / f"f{n}").write_bytes(b"x")
    cut = allocated_bytes(str(many), entries=100)
    assert not cut.complete and 100 * 4096 <= cut.allocated < 500 * 4096
    timed_out = allocated_bytes(str(many), seconds=0)
    assert not timed_out.complete
    assert allocated_bytes(str(many)).complete


def test_a_running_container_is_measured_in_its_own_layer(backend, desktop, host_file):
    """The same hostile tree made by the student in their container: 30 MB counted, nothing else."""
    ws = desktop.workspace_id
    upper = inspect("container", container_id(ws))["GraphDriver"]["Data"]["UpperDir"]
    before, complete = measured(backend, ws)
    assert complete and abs(before - du(upper)) < 64 * 1024
    odd = "\"$(printf 'new\\nline \\377')\""
    script = (
        'cd "$HOME" && head -c 31457280 /dev/urandom > big.bin && ln big.bin big.bin.hardlink'
        " && truncate -s 10G sparse.img && ln -s / to-root"
        f" && ln -s {host_file} to-host-file && ln -s {host_file.parent} to-host-folder"
        f" && ln -s {upper} to-own-layer && ln -s loop loop"
        f" && mkdir {odd} && head -c 5000 /dev/zero > {odd}/x"
    )
    code, out = backend.exec(ws, "display", ["sh", "-c", script])
    assert code == 0, out

    after, complete = measured(backend, ws)

    assert complete
    # The desktop writes a few small files of its own meanwhile (logs, X authority).
    assert 30 * MB <= after - before < 31 * MB, (before, after)
    # The engine's own measure adds up apparent sizes: the empty 10 GB counted in full.
    assert backend._engine_written(container_id(ws)) >= 10 * 1024**3


class LayerElsewhereEngine(DockerBackend):
    """The real backend, told of an upper directory the way a storage driver would."""

    upper: str | None = None

    def _upper_dir_of(self, container_id: str) -> str | None:
        return self.upper


@pytest.mark.parametrize(
    "upper",
    [
        None,  # a driver that names none (btrfs, zfs, vfs)
        "/nonexistent/lattice-layer/diff",  # one the worker cannot see (another mount namespace)
    ],
)
def test_without_a_readable_upper_directory_the_engine_measures(backend, desktop, upper):
    engine = LayerElsewhereEngine(prefix=PREFIX, socket_root=str(SOCKET_ROOT))
    engine.upper = upper
    # Sparse: the engine counts its announced size, the walk would count nothing.
    command = ["sh", "-c", 'truncate -s 1G "$HOME/sparse.img"']
    code, out = backend.exec(desktop.workspace_id, "display", command)
    assert code == 0, out

    written, complete = measured(engine, desktop.workspace_id)

    assert complete and written >= 1024**3
    # The desktop writes a few small files of its own meanwhile.
    assert abs(written - backend._engine_written(container_id(desktop.workspace_id))) < 64 * 1024


class SlowMeasures(DockerBackend):
    """The real backend over scripted containers, each of whose measures takes its whole bound."""

    walk_seconds = 0.5
    socket_folder_seconds = 0.0

    def __init__(self, containers: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows = [
            {"Id": name, "Labels": {LABEL_WORKSPACE: name, LABEL_CONTAINER: "ide", LABEL_ROLE: "app"}}
            for name in containers
        ]
        self.measured: list[str] = []

    def _running_rows(self) -> list[dict]:
        return self.rows

    def _measure(self, container_id: str) -> tuple[int | None, bool]:
        self.measured.append(container_id)
        time.sleep(self.walk_seconds)  # a student's many files make it last its bound
        return 1, True


def test_a_pass_starts_no_measure_past_its_deadline_and_the_next_begins_with_those_left():
    engine = SlowMeasures(["a", "b", "c", "d", "e"], prefix=PREFIX, socket_root=str(SOCKET_ROOT))
    started = time.monotonic()
    usage = engine.container_disk_usage(seconds=1.7)
    assert time.monotonic() - started < 1.7
    assert engine.measured == ["a", "b", "c"]
    left = [m.key for m in usage if not m.reached]
    assert left == ["d:ide", "e:ide"]
    assert all(m.written is None for m in usage if not m.reached)

    engine.measured.clear()
    engine.container_disk_usage(seconds=1.7, first=set(left))
    assert engine.measured == ["d", "e", "a"]
