"""The safe connect to a display socket, against real sockets on this host (no Docker).

What a student can put in their display's socket folder: a link to a host
socket, a file, a socket of their own. None of it is connected to, or, when
a socket of the wrong process answers, nothing is sent to it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.support.listeners import UnixListener
from workspaces.display.sockets import (
    SOCKET_NAME,
    DisplayRefused,
    DisplayTarget,
    Peer,
    check_peer,
    container_in,
    container_of,
    open_display,
    peer_of,
    probe,
)

CONTAINER = "c0ffee" + "0" * 58
OTHER = "d" * 64


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "displays" / "ws1").mkdir(parents=True)
    return tmp_path / "displays"


@pytest.fixture
def host_service(tmp_path):
    (tmp_path / "host").mkdir()
    listener = UnixListener(tmp_path / "host" / "service.sock")
    yield listener
    listener.close()


def target(root: Path, folder: str = "ws1", pid: int = 4242) -> DisplayTarget:
    return DisplayTarget(str(root), folder, CONTAINER, pid)


def test_a_link_in_place_of_the_socket_is_never_followed(root, host_service):
    (root / "ws1" / SOCKET_NAME).symlink_to(host_service.path)
    with pytest.raises(DisplayRefused, match="not a socket"):
        open_display(target(root), timeout=2)
    assert probe(str(root), "ws1", CONTAINER, timeout=1) is None
    host_service.close()
    assert host_service.connections == 0 and host_service.received == b""


def test_a_link_in_place_of_the_folder_is_never_followed(root, host_service, tmp_path):
    # The folder itself replaced by a link to the host service's folder.
    os.symlink(host_service.path.parent, root / "evil")
    os.rename(host_service.path, host_service.path.parent / SOCKET_NAME)
    with pytest.raises(DisplayRefused, match="not a plain folder"):
        open_display(target(root, "evil"), timeout=2)
    host_service.close()
    assert host_service.connections == 0


def test_a_plain_file_is_not_a_display(root):
    (root / "ws1" / SOCKET_NAME).write_text("RFB 003.008\n")
    with pytest.raises(DisplayRefused, match="not a socket"):
        open_display(target(root), timeout=2)


@pytest.mark.parametrize("folder", ["..", ".", "ws1/../ws2", "/etc", "", "a\0b"])
def test_the_folder_is_one_plain_name(root, folder):
    with pytest.raises(DisplayRefused, match="one plain name"):
        target(root, folder)


def test_a_target_without_the_displays_container_or_server_is_refused(root):
    with pytest.raises(DisplayRefused, match="container is not known"):
        DisplayTarget(str(root), "ws1", "", 42)
    with pytest.raises(DisplayRefused, match="VNC server is not known"):
        DisplayTarget(str(root), "ws1", CONTAINER, 0)
    with pytest.raises(DisplayRefused, match="container is not known"):
        DisplayTarget.from_endpoint({"path": f"{root}/ws1/{SOCKET_NAME}"})  # a grant from before


def test_a_socket_whose_listener_is_a_host_process_is_refused_before_a_byte(root):
    # A real socket in the folder, but this test (a host process, not uid 1000
    # in the display's container) listens on it.
    listener = UnixListener(root / "ws1" / SOCKET_NAME)
    try:
        # Refused by the first check it fails: its uid (unless it runs as 1000), or its pid.
        with pytest.raises(DisplayRefused, match=r"runs as uid|not the display's VNC server"):
            open_display(target(root, pid=os.getpid()), timeout=2)
    finally:
        listener.close()
    assert listener.received == b""


def test_the_peer_must_be_uid_1000_the_recorded_pid_and_in_the_container(monkeypatch):
    monkeypatch.setattr(
        "workspaces.display.sockets.container_of", lambda pid: CONTAINER if pid == 10 else OTHER
    )
    check_peer(Peer(pid=10, uid=1000), CONTAINER, 10)  # the display's own Xvnc
    with pytest.raises(DisplayRefused, match="uid 0"):
        check_peer(Peer(pid=10, uid=0), CONTAINER, 10)
    with pytest.raises(DisplayRefused, match="not the display's VNC server"):
        check_peer(Peer(pid=11, uid=1000), CONTAINER, 10)  # another process of the student's
    with pytest.raises(DisplayRefused, match="not in the display's container"):
        check_peer(Peer(pid=12, uid=1000), CONTAINER, None)  # another container's process


def test_this_process_is_in_no_container_and_its_peer_is_itself(root):
    assert container_of(os.getpid()) is None
    assert container_of(2**22 + 12345) is None  # no such process
    listener = UnixListener(root / "ws1" / "x.sock")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(listener.path))
            assert peer_of(sock) == Peer(pid=os.getpid(), uid=os.getuid())
    finally:
        listener.close()


@pytest.mark.parametrize(
    "text, expected",
    [
        # cgroup v1, cgroupfs driver (this engine)
        (f"8:pids:/docker/{CONTAINER}\n1:cpu:/docker/{CONTAINER}\n0::/docker/{CONTAINER}\n", CONTAINER),
        # systemd driver, v1 or v2
        (f"0::/system.slice/docker-{CONTAINER}.scope\n", CONTAINER),
        # Docker in Docker: the innermost container counts
        (f"0::/docker/{OTHER}/docker/{CONTAINER}\n", CONTAINER),
        # a hybrid host: the unified line names no container
        (f"8:pids:/docker/{CONTAINER}\n0::/\n", CONTAINER),
        ("8:pids:/user.slice\n0::/init.scope\n", None),  # a host process
        (f"8:pids:/docker/{CONTAINER}\n1:cpu:/docker/{OTHER}\n", None),  # lines that disagree
    ],
)
def test_the_container_of_a_cgroup(text, expected):
    assert container_in(text) == expected
