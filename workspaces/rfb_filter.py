"""What a view-only viewer may send to a VNC server, enforced in the display proxy.

The VNC server's view-only password is one lock; this is the second, and it
does not depend on who knows which password: the proxy reads the bytes a
browser sends to the desktop (RFB 3.3 to 3.8 client messages) and passes on
only the handshake and the messages that ask for pictures. Keys, pointer,
clipboard and screen-size changes are dropped; anything it cannot parse ends
the connection, so an unknown message can never slip through.
"""

from __future__ import annotations

import struct


class Refused(Exception):
    """The client sent something a view-only connection may not; close it."""


# Client-to-server messages (RFC 6143 and the extensions noVNC uses).
SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
ENABLE_CONTINUOUS_UPDATES = 150
CLIENT_FENCE = 248
SET_DESKTOP_SIZE = 251

# Passed on: they only ask for (or shape) what the viewer sees.
PASSED = {
    SET_PIXEL_FORMAT,
    SET_ENCODINGS,
    FRAMEBUFFER_UPDATE_REQUEST,
    ENABLE_CONTINUOUS_UPDATES,
    CLIENT_FENCE,
}
VNC_AUTH = 2


class ViewOnlyInput:
    """Feed it what the client sends; it returns the bytes that may reach the server."""

    def __init__(self) -> None:
        self.buffer = b""
        self.handshake_done = False
        self.version_minor: int | None = None
        self.dropped = 0  # messages dropped, for the log

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = bytearray()
        while True:
            length = self._next_length()
            if length is None or len(self.buffer) < length:
                return bytes(out)
            message, self.buffer = self.buffer[:length], self.buffer[length:]
            if self._step == 3 and not self.handshake_done:
                # ClientInit: always shared, so a viewer can never push the owner off.
                out += b"\x01"
            elif not self.handshake_done or message[0] in PASSED:
                out += message
            else:
                self.dropped += 1
            self._advance(message)

    # -- the handshake: version, security type, VNC auth response, ClientInit --
    _step = 0

    def _next_length(self) -> int | None:
        """Bytes of the next client message, or None until enough has arrived to tell."""
        if not self.handshake_done:
            return self._handshake_length()
        if not self.buffer:
            return None
        kind = self.buffer[0]
        fixed = {
            SET_PIXEL_FORMAT: 20,
            FRAMEBUFFER_UPDATE_REQUEST: 10,
            KEY_EVENT: 8,
            POINTER_EVENT: 6,
            ENABLE_CONTINUOUS_UPDATES: 10,
        }
        if kind in fixed:
            return fixed[kind]
        if kind == SET_ENCODINGS:
            return None if len(self.buffer) < 4 else 4 + 4 * struct.unpack(">H", self.buffer[2:4])[0]
        if kind == CLIENT_CUT_TEXT:
            if len(self.buffer) < 8:
                return None
            # A negative length is the extended clipboard's: its size is the absolute value.
            return 8 + abs(struct.unpack(">i", self.buffer[4:8])[0])
        if kind == CLIENT_FENCE:
            return None if len(self.buffer) < 9 else 9 + self.buffer[8]
        if kind == SET_DESKTOP_SIZE:
            return None if len(self.buffer) < 8 else 8 + 16 * self.buffer[6]
        raise Refused(f"client message type {kind} is not allowed on a view-only connection")

    def _handshake_length(self) -> int | None:
        if self._step == 0:  # ProtocolVersion: "RFB 003.008\n"
            return 12
        if self._step == 1:  # 3.7+: the chosen security type (3.3: the server chose, no byte)
            return 1
        if self._step == 2:  # the VNC authentication response
            return 16
        return 1  # ClientInit: the shared flag

    def _advance(self, message: bytes) -> None:
        if self.handshake_done:
            return
        if self._step == 0:
            if not message.startswith(b"RFB 003."):
                raise Refused("not an RFB client")
            self.version_minor = int(message[8:11])
            self._step = 1
            if self.version_minor < 7:
                self._step = 2
        elif self._step == 1:
            # Our displays offer VNC authentication only; anything else is not ours to pass.
            if message[0] != VNC_AUTH:
                raise Refused(f"security type {message[0]} is not allowed")
            self._step = 2
        elif self._step == 2:
            self._step = 3
        else:
            self.handshake_done = True
