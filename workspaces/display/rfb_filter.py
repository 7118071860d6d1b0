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


DEFAULT_MAX_CLIPBOARD = 1 << 20  # bytes of ClientCutText (LATTICE_CLIPBOARD_MAX_BYTES)
_FIXED = {
    SET_PIXEL_FORMAT: 20,
    FRAMEBUFFER_UPDATE_REQUEST: 10,
    KEY_EVENT: 8,
    POINTER_EVENT: 6,
    ENABLE_CONTINUOUS_UPDATES: 10,
}
_HEADER = 9  # bytes enough to tell any message's length


class ViewOnlyInput:
    """Feed it what the client sends; it returns the bytes that may reach the server.

    Memory stays bounded whatever the client announces: a message that is
    passed on is held until whole, and none is larger than RFB allows
    (SetEncodings, the largest, is 256 KiB); a dropped one is skipped as its
    bytes arrive, never held; clipboard text over ``max_clipboard`` ends the
    connection at once.
    """

    def __init__(self, max_clipboard: int = DEFAULT_MAX_CLIPBOARD) -> None:
        self.max_clipboard = max_clipboard
        self.buffer = bytearray()
        self.skipping = 0  # bytes of a dropped message still to come
        self.handshake_done = False
        self.version_minor: int | None = None
        self.dropped = 0  # messages dropped, for the log

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        self.buffer += data
        pos = 0  # consumed so far: the buffer's head is cut once per feed, not per message
        try:
            while True:
                if self.skipping:
                    skipped = min(self.skipping, len(self.buffer) - pos)
                    pos += skipped
                    self.skipping -= skipped
                    if self.skipping:
                        return bytes(out)
                length = self._next_length(bytes(self.buffer[pos : pos + _HEADER]))
                if length is None:
                    return bytes(out)
                if self.handshake_done and self.buffer[pos] not in PASSED:
                    self.dropped += 1
                    self.skipping = length
                    continue
                if len(self.buffer) - pos < length:
                    return bytes(out)
                message = bytes(self.buffer[pos : pos + length])
                pos += length
                if self._step == 3 and not self.handshake_done:
                    # ClientInit: always shared, so a viewer can never push the owner off.
                    out += b"\x01"
                else:
                    out += message
                self._advance(message)
        finally:
            del self.buffer[:pos]

    # -- the handshake: version, security type, VNC auth response, ClientInit --
    _step = 0

    def _next_length(self, head: bytes) -> int | None:
        """Bytes of the message that starts with ``head``, or None until enough has arrived to tell."""
        if not self.handshake_done:
            return self._handshake_length()
        if not head:
            return None
        kind = head[0]
        if kind in _FIXED:
            return _FIXED[kind]
        if kind == SET_ENCODINGS:
            return None if len(head) < 4 else 4 + 4 * struct.unpack(">H", head[2:4])[0]
        if kind == CLIENT_CUT_TEXT:
            if len(head) < 8:
                return None
            # A negative length is the extended clipboard's: its size is the absolute value.
            size = abs(struct.unpack(">i", head[4:8])[0])
            if size > self.max_clipboard:
                raise Refused(f"clipboard text of {size} bytes (at most {self.max_clipboard})")
            return 8 + size
        if kind == CLIENT_FENCE:
            return None if len(head) < 9 else 9 + head[8]
        if kind == SET_DESKTOP_SIZE:
            return None if len(head) < 8 else 8 + 16 * head[6]
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
