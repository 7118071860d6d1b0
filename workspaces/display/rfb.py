"""A small RFB (VNC) client: class thumbnails, tests and benchmarks use it.

It speaks just enough of RFB 3.8 to authenticate with a VNC password, read a
whole framebuffer (raw encoding) and send pointer and key events, so a test
can look at what a browser would see and try what a browser could do.

The server is untrusted: a display runs in a student's container, so whatever
answers on its socket may be hostile. Every size the server announces (the
framebuffer, a rectangle, cut text, the desktop name, a failure reason) is
checked against a bound before anything is read or allocated, and every step
(the handshake, a frame, an update) has an overall deadline, not just a
per-recv timeout: a server that drips one byte a second cannot hold the
client, and one that announces 65535x65535 cannot make it allocate 17 GB.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from Crypto.Cipher import DES
from websockets.sync.client import connect

from .sockets import DisplayTarget, open_display

VNC_AUTH = 2


def _vnc_key(password: str) -> bytes:
    # VNC's DES key: the password's first 8 bytes, each byte's bits reversed.
    raw = password.encode()[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


# What a display may announce. Browsers resize the display (noVNC's remote
# resizing), so the bound is the largest screen allowed, not the start size.
DEFAULT_MAX_SCREEN = (3840, 2160)
MAX_NAME = 4096  # bytes of a desktop name
MAX_REASON = 4096  # bytes of a refusal's reason
MAX_CUT_TEXT = 1 << 20  # bytes of server clipboard text (skipped, never kept)


class RFBError(Exception):
    pass


class RFBTimeout(RFBError):
    """The server did not finish a step within its overall deadline."""


@dataclass
class Frame:
    width: int
    height: int
    bytes_per_pixel: int
    pixels: bytes

    def distinct_colours(self, step: int = 97) -> int:
        bpp = self.bytes_per_pixel
        samples = {self.pixels[i : i + bpp] for i in range(0, len(self.pixels) - bpp, bpp * step)}
        return len(samples)

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        i = (y * self.width + x) * self.bytes_per_pixel
        blue, green, red = self.pixels[i : i + 3]
        return (red, green, blue)

    def is_blank(self) -> bool:
        return self.distinct_colours() <= 1

    def png(self, max_width: int = 0) -> bytes:
        """The frame as PNG, scaled down to at most ``max_width`` pixels wide."""
        from io import BytesIO

        from PIL import Image

        picture = Image.frombuffer("RGB", (self.width, self.height), self.pixels, "raw", "BGRX", 0, 1)
        if max_width and self.width > max_width:
            picture = picture.resize((max_width, round(self.height * max_width / self.width)), Image.BILINEAR)
        out = BytesIO()
        picture.save(out, format="PNG", optimize=False)
        return out.getvalue()


class _WebSocket:
    def __init__(self, url: str, origin: str, timeout: float):
        self.ws = connect(
            url,
            origin=origin,
            subprotocols=["binary"],
            open_timeout=timeout,
            max_size=None,
            close_timeout=1,
            legacy=True,
        )
        self.timeout = timeout

    def recv(self, timeout: float) -> bytes:
        message = self.ws.recv(timeout=timeout)
        return message if isinstance(message, bytes) else message.encode()

    def send(self, data: bytes, timeout: float) -> None:
        self.ws.send(data)

    def close(self) -> None:
        self.ws.close()


class _Socket:
    """A display's own socket: its unix socket on this host, or TCP for a plain `docker run`."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def unix(cls, target: DisplayTarget, timeout: float) -> _Socket:
        # Never a bare path: the student can write in the socket's folder.
        return cls(open_display(target, timeout))

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float) -> _Socket:
        return cls(socket.create_connection((host, port), timeout=timeout))

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the VNC server closed the connection")
        return data

    def send(self, data: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class RFBClient:
    """Through the display proxy by default; ``RFBClient.unix`` talks to a display's socket.

    ``timeout`` bounds each step as a whole: the handshake, one frame(), one
    read_update(), however the server paces its bytes. ``deadline`` (seconds
    from now) bounds the whole session on top, for callers such as the
    worker's thumbnails that must end by a fixed time. ``max_screen`` is the
    largest framebuffer (width, height) accepted.
    """

    def __init__(
        self,
        url: str,
        password: str,
        origin: str,
        timeout: float = 15,
        transport=None,
        *,
        deadline: float | None = None,
        max_screen: tuple[int, int] = DEFAULT_MAX_SCREEN,
    ):
        self.timeout = timeout
        self.max_screen = max_screen
        self._deadline = deadline
        self._session_end = time.monotonic() + deadline if deadline is not None else None
        self._step_end = self._session_end
        self.transport = transport or _WebSocket(url, origin, timeout)
        self.buffer = bytearray()
        try:
            with self._step():
                self._handshake(password)
        except BaseException:
            self.transport.close()
            raise

    @classmethod
    def unix(cls, target: DisplayTarget, password: str, timeout: float = 15, **bounds) -> RFBClient:
        return cls("", password, "", transport=_Socket.unix(target, timeout), timeout=timeout, **bounds)

    @classmethod
    def tcp(cls, host: str, port: int, password: str, timeout: float = 15, **bounds) -> RFBClient:
        return cls("", password, "", transport=_Socket.tcp(host, port, timeout), timeout=timeout, **bounds)

    # -- transport -------------------------------------------------------------
    @contextmanager
    def _step(self) -> Iterator[None]:
        """One step of the protocol: it ends within ``timeout`` (and the session's deadline)."""
        end = time.monotonic() + self.timeout
        if self._session_end is not None:
            end = min(end, self._session_end)
        self._step_end = end
        try:
            yield
        finally:
            self._step_end = self._session_end

    def _remaining(self) -> float:
        if self._step_end is None:
            return self.timeout
        left = self._step_end - time.monotonic()
        if left <= 0:
            raise self._late()
        return left

    def _late(self) -> RFBTimeout:
        session = self._session_end is not None and self._step_end == self._session_end
        limit = self._deadline if session else self.timeout
        return RFBTimeout(f"the VNC server did not answer in time (within {limit:g} s)")

    def _read(self, n: int) -> bytes:
        # Callers check n against a bound first: the buffer never holds more
        # than one bounded item plus one recv.
        while len(self.buffer) < n:
            try:
                self.buffer += self.transport.recv(self._remaining())
            except TimeoutError as exc:
                raise self._late() from exc
        data = bytes(self.buffer[:n])
        del self.buffer[:n]  # bytearray drops its head in place: no quadratic copying
        return data

    def _read_length(self, limit: int, what: str) -> int:
        """A 32-bit length the server announces, refused when over ``limit``."""
        (length,) = struct.unpack(">I", self._read(4))
        if length > limit:
            raise RFBError(f"the VNC server announced {what} of {length} bytes (at most {limit})")
        return length

    def _send(self, data: bytes) -> None:
        try:
            self.transport.send(data, self._remaining())
        except TimeoutError as exc:
            raise self._late() from exc

    # -- protocol ----------------------------------------------------------------
    def _handshake(self, password: str) -> None:
        version = self._read(12)
        if not version.startswith(b"RFB "):
            raise RFBError(f"not an RFB server: {version!r}")
        self._send(b"RFB 003.008\n")
        count = self._read(1)[0]
        if count == 0:
            raise RFBError(self._read(self._read_length(MAX_REASON, "a reason")).decode(errors="replace"))
        types = self._read(count)
        if VNC_AUTH not in types:
            raise RFBError(f"server offers no VNC authentication: {list(types)}")
        self._send(bytes([VNC_AUTH]))
        challenge = self._read(16)
        self._send(DES.new(_vnc_key(password), DES.MODE_ECB).encrypt(challenge))
        (result,) = struct.unpack(">I", self._read(4))
        if result != 0:
            reason = self._read(self._read_length(MAX_REASON, "a reason")).decode(errors="replace")
            raise RFBError(reason or "authentication failed")
        self._send(b"\x01")  # shared: other viewers stay connected
        self.width, self.height = struct.unpack(">HH", self._read(4))
        self._check_screen()
        self._read(16)  # the server's pixel format: replaced by ours below
        self.name = self._read(self._read_length(MAX_NAME, "a desktop name")).decode(errors="replace")
        # Ask for one known pixel format (32 bpp, little-endian, red at bit
        # 16), so a frame's bytes are always B, G, R, unused.
        self._send(
            struct.pack(">Bxxx", 0) + struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        )
        self.bytes_per_pixel = 4
        self._send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw only

    def _check_screen(self) -> None:
        most_w, most_h = self.max_screen
        if not (0 < self.width <= most_w and 0 < self.height <= most_h):
            raise RFBError(
                f"the VNC server announced a {self.width}x{self.height} screen "
                f"(at most {most_w}x{most_h} is allowed)"
            )

    def request_frame(self, incremental: bool = False) -> None:
        self._send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    def _rectangles(self) -> Iterator[tuple[int, int, int, int, bytes]]:
        """Rectangles of the next framebuffer update, one at a time, skipping bells and clipboard text."""
        while True:
            kind = self._read(1)[0]
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            if kind == 3:  # server cut text
                self._read(3)
                self._read(self._read_length(MAX_CUT_TEXT, "clipboard text"))
                continue
            raise RFBError(f"unexpected server message type {kind}")
        self._read(1)
        (count,) = struct.unpack(">H", self._read(2))
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", self._read(12))
            if encoding != 0:
                raise RFBError(f"unexpected encoding {encoding}")
            if x + w > self.width or y + h > self.height:
                raise RFBError(
                    f"the VNC server sent a {w}x{h} rectangle at {x},{y}, "
                    f"outside its {self.width}x{self.height} screen"
                )
            yield x, y, w, h, self._read(w * h * self.bytes_per_pixel)

    def read_update(self) -> list[tuple[int, int, int, int, bytes]]:
        """Rectangles of the next framebuffer update, skipping bells and clipboard text."""
        with self._step():
            return list(self._rectangles())

    def frame(self) -> Frame:
        """The whole screen as it is now."""
        with self._step():
            self.request_frame(incremental=False)
            canvas = bytearray(self.width * self.height * self.bytes_per_pixel)
            covered = 0
            while covered < self.width * self.height:
                # Painted as they come: an update holds at most one rectangle in memory.
                for x, y, w, h, data in self._rectangles():
                    row = w * self.bytes_per_pixel
                    for line in range(h):
                        start = ((y + line) * self.width + x) * self.bytes_per_pixel
                        canvas[start : start + row] = data[line * row : (line + 1) * row]
                    covered += w * h
            return Frame(self.width, self.height, self.bytes_per_pixel, bytes(canvas))

    def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        with self._step():
            self._send(struct.pack(">BBHH", 5, buttons, x, y))

    def key(self, keysym: int, down: bool) -> None:
        with self._step():
            self._send(struct.pack(">BBxxI", 4, int(down), keysym))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RFBClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
