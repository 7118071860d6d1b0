"""The RFB client against hostile servers: a display is the student's, so what it
announces is bounded and every step ends in time, whatever it sends.

Each fake server is a thread in this test, on a unix socket of its own. The
client reaches it through RFBClient's transport (a plain connected socket),
the path every way of connecting shares.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workspaces.display.rfb import RFBClient, RFBError, RFBTimeout, _Socket

Behaviour = Callable[[socket.socket], None]


def recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client went away")
        data += chunk
    return data


def handshake(conn: socket.socket, width: int = 64, height: int = 48, name_length: int | None = None) -> None:
    """The server's half of an RFB 3.8 handshake with VNC authentication (any password passes)."""
    conn.sendall(b"RFB 003.008\n")
    recv_exact(conn, 12)
    conn.sendall(bytes([1, 2]))  # one security type: VNC authentication
    recv_exact(conn, 1)
    conn.sendall(bytes(16))  # the challenge
    recv_exact(conn, 16)
    conn.sendall(struct.pack(">I", 0))  # authenticated
    recv_exact(conn, 1)  # shared flag
    name = b"fake"
    conn.sendall(
        struct.pack(">HH", width, height)
        + bytes(16)
        + struct.pack(">I", len(name) if name_length is None else name_length)
        + (name if name_length is None else b"")
    )
    if name_length is None:
        recv_exact(conn, 20 + 8)  # SetPixelFormat, SetEncodings


def update_header(rects: int) -> bytes:
    return struct.pack(">BxH", 0, rects)


def rectangle(x: int, y: int, w: int, h: int) -> bytes:
    return struct.pack(">HHHHi", x, y, w, h, 0)


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[Callable[[Behaviour], socket.socket]]:
    """Start a fake RFB server doing ``behaviour``; returns a socket connected to it."""
    servers: list[tuple[socket.socket, socket.socket, threading.Thread]] = []

    def start(behaviour: Behaviour) -> socket.socket:
        path = str(tmp_path / f"vnc-{len(servers)}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            # OSError: the client hung up, as a bounded client does.
            with conn, contextlib.suppress(OSError):
                behaviour(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        servers.append((listener, client, thread))
        return client

    yield start
    for listener, client, thread in servers:
        client.close()
        listener.close()
        thread.join(timeout=5)


def client_over(sock: socket.socket, timeout: float = 2, **bounds) -> RFBClient:
    # As RFBClient.unix sets it up: a per-recv socket timeout of ``timeout``.
    sock.settimeout(timeout)
    return RFBClient("", "password", "", timeout=timeout, transport=_Socket(sock), **bounds)


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException | object]]:
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_screen_bigger_than_the_maximum_is_refused_before_anything_is_allocated(fake_server):
    sock = fake_server(lambda conn: (handshake(conn, 65535, 65535), conn.recv(1)))
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(RFBError, match=r"65535x65535 screen \(at most 3840x2160"):
            client_over(sock, timeout=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1
    # A 65535x65535 canvas is 17 GB; the refusal costs next to nothing.
    assert peak < 1 << 20


def test_the_maximum_is_the_callers(fake_server):
    sock = fake_server(lambda conn: (handshake(conn, 1920, 1080), conn.recv(1)))
    with pytest.raises(RFBError, match=r"1920x1080 screen \(at most 1280x800"):
        client_over(sock, max_screen=(1280, 800))


def test_a_name_longer_than_the_bound_is_refused_at_once(fake_server):
    sock = fake_server(lambda conn: (handshake(conn, name_length=1 << 31), conn.recv(1)))
    with pytest.raises(RFBError, match="desktop name of 2147483648 bytes"):
        client_over(sock)


def test_clipboard_text_longer_than_the_bound_is_refused_at_once(fake_server):
    def behaviour(conn: socket.socket) -> None:
        handshake(conn)
        recv_exact(conn, 10)  # the frame request
        conn.sendall(struct.pack(">Bxxx", 3) + struct.pack(">I", 1 << 31))
        conn.recv(1)

    rfb = client_over(fake_server(behaviour))
    tracemalloc.start()
    try:
        with pytest.raises(RFBError, match="clipboard text of 2147483648 bytes"):
            rfb.frame()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_rectangle_outside_the_screen_is_refused(fake_server):
    def behaviour(conn: socket.socket) -> None:
        handshake(conn, 64, 48)
        recv_exact(conn, 10)
        conn.sendall(update_header(1) + rectangle(60, 0, 10, 10))  # x + w = 70 > 64
        conn.recv(1)

    rfb = client_over(fake_server(behaviour))
    with pytest.raises(RFBError, match="10x10 rectangle at 60,0, outside its 64x48 screen"):
        rfb.frame()


def drip_forever(conn: socket.socket) -> None:
    """A whole-screen update whose pixels come one byte at a time, forever."""
    handshake(conn, 64, 48)
    recv_exact(conn, 10)
    conn.sendall(update_header(1) + rectangle(0, 0, 64, 48))
    while True:
        conn.sendall(b"\0")
        time.sleep(0.05)


def test_a_server_that_drips_bytes_cannot_hold_a_frame_past_its_timeout(fake_server):
    # Every recv gets a byte well within the per-recv timeout: only an
    # overall deadline for the frame ends it.
    rfb = client_over(fake_server(drip_forever), timeout=1.5)
    started = time.monotonic()
    thread, outcome = in_thread(rfb.frame)
    thread.join(timeout=5)
    assert not thread.is_alive(), "the frame was still being read after 5 s"
    assert isinstance(outcome[0], RFBTimeout), outcome
    assert "did not answer in time" in str(outcome[0])
    assert time.monotonic() - started < 2.5


def test_the_session_deadline_bounds_the_handshake_and_the_frame_together(fake_server):
    def slow_handshake(conn: socket.socket) -> None:
        time.sleep(0.6)  # within the per-step timeout, but it eats the session's time
        drip_forever(conn)

    started = time.monotonic()
    rfb = client_over(fake_server(slow_handshake), timeout=30, deadline=1.0)
    with pytest.raises(RFBTimeout):
        rfb.frame()
    assert time.monotonic() - started < 1.5


def test_an_honest_server_still_gives_its_frame(fake_server):
    def behaviour(conn: socket.socket) -> None:
        handshake(conn, 4, 2)
        recv_exact(conn, 10)
        red = bytes([0, 0, 255, 0])
        # A bell, some clipboard text, then the screen in two rectangles.
        conn.sendall(b"\x02" + struct.pack(">BxxxI", 3, 5) + b"hello")
        conn.sendall(update_header(2) + rectangle(0, 0, 4, 1) + red * 4 + rectangle(0, 1, 4, 1) + red * 4)
        conn.recv(1)

    with client_over(fake_server(behaviour)) as rfb:
        frame = rfb.frame()
    assert (frame.width, frame.height) == (4, 2)
    assert frame.rgb(3, 1) == (255, 0, 0)
