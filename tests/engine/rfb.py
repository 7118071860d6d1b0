"""A tiny RFB (VNC) client for tests: VNC auth, one raw frame, keys, pointer.

Only what the engine tests need to see the desktop the way a viewer does.
Debian bookworm has no vncsnapshot, and noVNC needs a browser.
"""

from __future__ import annotations

import socket
import struct
import zlib
from dataclasses import dataclass

from Crypto.Cipher import DES


class RFBError(Exception):
    pass


def _vnc_key(password: str) -> bytes:
    # VNC auth uses DES with the password (8 bytes, zero padded) as the key,
    # each byte's bits mirrored: a quirk of the original implementation.
    raw = password.encode("latin-1")[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


@dataclass
class Frame:
    width: int
    height: int
    pixels: bytes  # BGRX, 4 bytes per pixel, row after row

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        i = (y * self.width + x) * 4
        b, g, r = self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]
        return (r, g, b)

    def distinct_colours(self, step: int = 7) -> int:
        seen = set()
        for i in range(0, len(self.pixels), 4 * step):
            seen.add(self.pixels[i : i + 3])
        return len(seen)

    def to_png(self) -> bytes:
        rows = bytearray()
        for y in range(self.height):
            rows.append(0)
            row = self.pixels[y * self.width * 4 : (y + 1) * self.width * 4]
            for i in range(0, len(row), 4):
                rows += bytes((row[i + 2], row[i + 1], row[i]))

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
            + chunk(b"IEND", b"")
        )


class RFBClient:
    def __init__(self, host: str, port: int = 5900, password: str = "", timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.banner = self._recv(12)
        if not self.banner.startswith(b"RFB "):
            raise RFBError(f"not an RFB server: {self.banner!r}")
        self.sock.sendall(b"RFB 003.008\n")
        (count,) = struct.unpack("B", self._recv(1))
        if count == 0:
            raise RFBError(self._reason())
        types = self._recv(count)
        if 2 not in types:
            raise RFBError(f"no VNC auth offered: {list(types)}")
        self.sock.sendall(b"\x02")
        challenge = self._recv(16)
        self.sock.sendall(DES.new(_vnc_key(password), DES.MODE_ECB).encrypt(challenge))
        (result,) = struct.unpack(">I", self._recv(4))
        if result != 0:
            raise RFBError(f"authentication failed: {self._reason()}")
        self.sock.sendall(b"\x01")  # shared: never kick other viewers
        self.width, self.height = struct.unpack(">HH", self._recv(4))
        self._recv(16)  # the server's pixel format; we set our own below
        (name_len,) = struct.unpack(">I", self._recv(4))
        self.name = self._recv(name_len).decode("utf-8", "replace")
        # 32 bpp, depth 24, little endian, true colour, 8 bits each: BGRX.
        self.sock.sendall(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
        self.sock.sendall(struct.pack(">BxHi", 2, 1, 0))  # raw encoding only

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            part = self.sock.recv(n - len(buf))
            if not part:
                raise RFBError("connection closed")
            buf += part
        return bytes(buf)

    def _reason(self) -> str:
        try:
            (length,) = struct.unpack(">I", self._recv(4))
            return self._recv(length).decode("utf-8", "replace")
        except (RFBError, OSError):
            return "(no reason given)"

    def snapshot(self) -> Frame:
        """Ask for the whole screen and return it once every rectangle came."""
        self.sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, self.width, self.height))
        pixels = bytearray(self.width * self.height * 4)
        while True:
            (kind,) = struct.unpack("B", self._recv(1))
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            if kind == 3:  # server cut text
                self._recv(3)
                (length,) = struct.unpack(">I", self._recv(4))
                self._recv(length)
                continue
            raise RFBError(f"unexpected server message {kind}")
        _, rects = struct.unpack(">BH", self._recv(3))
        for _ in range(rects):
            x, y, w, h, enc = struct.unpack(">HHHHi", self._recv(12))
            if enc != 0:
                raise RFBError(f"unexpected encoding {enc}")
            data = self._recv(w * h * 4)
            for row in range(h):
                start = ((y + row) * self.width + x) * 4
                pixels[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
        return Frame(self.width, self.height, bytes(pixels))

    def key(self, keysym: int) -> None:
        self.sock.sendall(struct.pack(">BBxxI", 4, 1, keysym))
        self.sock.sendall(struct.pack(">BBxxI", 4, 0, keysym))

    def type_text(self, text: str) -> None:
        for ch in text:
            self.key(0xFF0D if ch == "\n" else ord(ch))

    def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        self.sock.sendall(struct.pack(">BBHH", 5, buttons, x, y))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RFBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def banner(host: str, port: int = 5900, timeout: float = 2) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        return s.recv(12)
