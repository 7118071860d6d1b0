"""A small RFB (VNC) client: class thumbnails, tests and benchmarks use it.

It speaks just enough of RFB 3.8 to authenticate with a VNC password, read a
whole framebuffer (raw encoding) and send pointer and key events, so a test
can look at what a browser would see and try what a browser could do.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from Crypto.Cipher import DES
from websockets.sync.client import connect

VNC_AUTH = 2


def _vnc_key(password: str) -> bytes:
    # VNC's DES key: the password's first 8 bytes, each byte's bits reversed.
    raw = password.encode()[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


class RFBError(Exception):
    pass


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

    def recv(self) -> bytes:
        message = self.ws.recv(timeout=self.timeout)
        return message if isinstance(message, bytes) else message.encode()

    def send(self, data: bytes) -> None:
        self.ws.send(data)

    def close(self) -> None:
        self.ws.close()


class _Socket:
    """A display's own socket: its unix socket on this host, or TCP for a plain `docker run`."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def unix(cls, path: str, timeout: float) -> _Socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float) -> _Socket:
        return cls(socket.create_connection((host, port), timeout=timeout))

    def recv(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the VNC server closed the connection")
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class RFBClient:
    """Through the display proxy by default; ``RFBClient.unix`` talks to a display's socket."""

    def __init__(self, url: str, password: str, origin: str, timeout: float = 15, transport=None):
        self.transport = transport or _WebSocket(url, origin, timeout)
        self.buffer = b""
        self._handshake(password)

    @classmethod
    def unix(cls, path: str, password: str, timeout: float = 15) -> RFBClient:
        return cls("", password, "", transport=_Socket.unix(path, timeout))

    @classmethod
    def tcp(cls, host: str, port: int, password: str, timeout: float = 15) -> RFBClient:
        return cls("", password, "", transport=_Socket.tcp(host, port, timeout))

    # -- transport -------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.transport.recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send(self, data: bytes) -> None:
        self.transport.send(data)

    # -- protocol ----------------------------------------------------------------
    def _handshake(self, password: str) -> None:
        version = self._read(12)
        if not version.startswith(b"RFB "):
            raise RFBError(f"not an RFB server: {version!r}")
        self._send(b"RFB 003.008\n")
        count = self._read(1)[0]
        if count == 0:
            raise RFBError(self._read(struct.unpack(">I", self._read(4))[0]).decode())
        types = self._read(count)
        if VNC_AUTH not in types:
            raise RFBError(f"server offers no VNC authentication: {list(types)}")
        self._send(bytes([VNC_AUTH]))
        challenge = self._read(16)
        self._send(DES.new(_vnc_key(password), DES.MODE_ECB).encrypt(challenge))
        (result,) = struct.unpack(">I", self._read(4))
        if result != 0:
            raise RFBError(
                self._read(struct.unpack(">I", self._read(4))[0]).decode() or "authentication failed"
            )
        self._send(b"\x01")  # shared: other viewers stay connected
        self.width, self.height = struct.unpack(">HH", self._read(4))
        pixel_format = self._read(16)
        self.bytes_per_pixel = pixel_format[0] // 8
        self.name = self._read(struct.unpack(">I", self._read(4))[0]).decode(errors="replace")
        # Ask for one known pixel format (32 bpp, little-endian, red at bit
        # 16), so a frame's bytes are always B, G, R, unused.
        self._send(
            struct.pack(">Bxxx", 0) + struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        )
        self.bytes_per_pixel = 4
        self._send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw only

    def request_frame(self, incremental: bool = False) -> None:
        self._send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    def read_update(self) -> list[tuple[int, int, int, int, bytes]]:
        """Rectangles of the next framebuffer update, skipping bells and clipboard text."""
        while True:
            kind = self._read(1)[0]
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            if kind == 3:  # server cut text
                self._read(3)
                self._read(struct.unpack(">I", self._read(4))[0])
                continue
            raise RFBError(f"unexpected server message type {kind}")
        self._read(1)
        (count,) = struct.unpack(">H", self._read(2))
        rects = []
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", self._read(12))
            if encoding != 0:
                raise RFBError(f"unexpected encoding {encoding}")
            rects.append((x, y, w, h, self._read(w * h * self.bytes_per_pixel)))
        return rects

    def frame(self) -> Frame:
        """The whole screen as it is now."""
        self.request_frame(incremental=False)
        canvas = bytearray(self.width * self.height * self.bytes_per_pixel)
        covered = 0
        while covered < self.width * self.height:
            for x, y, w, h, data in self.read_update():
                row = w * self.bytes_per_pixel
                for line in range(h):
                    start = ((y + line) * self.width + x) * self.bytes_per_pixel
                    canvas[start : start + row] = data[line * row : (line + 1) * row]
                covered += w * h
        return Frame(self.width, self.height, self.bytes_per_pixel, bytes(canvas))

    def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        self._send(struct.pack(">BBHH", 5, buttons, x, y))

    def key(self, keysym: int, down: bool) -> None:
        self._send(struct.pack(">BBxxI", 4, int(down), keysym))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RFBClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
