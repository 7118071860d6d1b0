"""The display proxy's view-only filter and its token scopes, without a display."""

from __future__ import annotations

import struct
import time

import pytest

from workspaces.display import tokens as display_tokens
from workspaces.display.rfb_filter import Refused, ViewOnlyInput
from workspaces.lib import redis as lib_redis

HANDSHAKE_38 = b"RFB 003.008\n" + b"\x02" + b"k" * 16 + b"\x00"
SET_PIXEL_FORMAT = struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
SET_ENCODINGS = struct.pack(">BxHii", 2, 2, 0, -223)
UPDATE_REQUEST = struct.pack(">BBHHHH", 3, 0, 0, 0, 1280, 800)
FENCE = struct.pack(">B3xIB", 248, 0, 3) + b"abc"
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 1280, 800)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 20)
CUT_TEXT = struct.pack(">BxxxI", 6, 5) + b"hello"
EXTENDED_CUT_TEXT = struct.pack(">Bxxxi", 6, -8) + b"\x00" * 8
RESIZE = struct.pack(">BxHHBx", 251, 1920, 1080, 1) + b"\x00" * 16


def test_the_handshake_and_picture_requests_pass_unchanged_but_the_shared_flag():
    view = ViewOnlyInput()
    sent = HANDSHAKE_38 + SET_PIXEL_FORMAT + SET_ENCODINGS + UPDATE_REQUEST + FENCE + CONTINUOUS
    # ClientInit asked for exclusive access (0): a viewer never gets it.
    assert view.feed(sent) == HANDSHAKE_38[:-1] + b"\x01" + sent[len(HANDSHAKE_38) :]


def test_keys_pointer_clipboard_and_resizing_are_dropped():
    view = ViewOnlyInput()
    view.feed(HANDSHAKE_38)
    sent = KEY + UPDATE_REQUEST + POINTER + CUT_TEXT + EXTENDED_CUT_TEXT + RESIZE + UPDATE_REQUEST
    assert view.feed(sent) == UPDATE_REQUEST + UPDATE_REQUEST
    assert view.dropped == 5


def test_messages_split_across_frames_are_parsed_whole():
    view = ViewOnlyInput()
    stream = HANDSHAKE_38 + POINTER + SET_ENCODINGS + CUT_TEXT + UPDATE_REQUEST
    passed = b"".join(view.feed(stream[i : i + 3]) for i in range(0, len(stream), 3))
    assert passed == HANDSHAKE_38[:-1] + b"\x01" + SET_ENCODINGS + UPDATE_REQUEST


def test_rfb_33_has_no_security_type_byte():
    view = ViewOnlyInput()
    handshake = b"RFB 003.003\n" + b"r" * 16 + b"\x01"
    assert view.feed(handshake + KEY + UPDATE_REQUEST) == handshake + UPDATE_REQUEST


@pytest.mark.parametrize(
    "stream, reason",
    [
        (b"GET / HTTP/1.1\r\n", "not an RFB client"),
        (b"RFB 003.008\n" + b"\x01", "security type 1"),  # "None": never what our displays offer
        (HANDSHAKE_38 + b"\xfa\x00\x00\x00", "type 250"),  # xvp: power off the machine
        (HANDSHAKE_38 + b"\xff\x00" + b"\x00" * 10, "type 255"),  # QEMU extensions
    ],
)
def test_anything_unknown_ends_the_connection(stream, reason):
    with pytest.raises(Refused, match=reason):
        ViewOnlyInput().feed(stream)


# -- memory: what a client announces never decides what the filter holds -------------------


def test_clipboard_text_announced_at_2_to_the_31_ends_the_connection_at_once():
    view = ViewOnlyInput(max_clipboard=1 << 20)
    view.feed(HANDSHAKE_38)
    for length in (2**31 - 1, -(2**31)):  # the plain and the extended clipboard's largest
        with pytest.raises(Refused, match=r"clipboard text of 21474836\d\d bytes \(at most 1048576\)"):
            ViewOnlyInput(max_clipboard=1 << 20).feed(HANDSHAKE_38 + struct.pack(">Bxxxi", 6, length))
    with pytest.raises(Refused, match="clipboard"):
        view.feed(struct.pack(">BxxxI", 6, (1 << 20) + 1))


def test_a_dropped_message_is_skipped_as_it_arrives_never_held():
    view = ViewOnlyInput(max_clipboard=1 << 20)
    view.feed(HANDSHAKE_38)
    text = b"x" * (1 << 20)
    stream = struct.pack(">BxxxI", 6, len(text)) + text + UPDATE_REQUEST
    passed = b""
    held = 0
    for i in range(0, len(stream), 4096):
        passed += view.feed(stream[i : i + 4096])
        held = max(held, len(view.buffer))
    assert passed == UPDATE_REQUEST and view.dropped == 1
    assert held < 4096  # at most one chunk's worth: the clipboard text was never gathered


def test_many_messages_at_once_cost_linear_time():
    view = ViewOnlyInput()
    view.feed(HANDSHAKE_38)
    # 2.4 MB of requests in one websocket message: cutting the buffer's head
    # per message (the old way) copies ~1 MB 240,000 times (14 s here; this takes 1 s).
    burst = UPDATE_REQUEST * 240_000
    started = time.monotonic()
    assert view.feed(burst) == burst
    assert time.monotonic() - started < 5
    assert len(view.buffer) == 0


# -- token scopes -----------------------------------------------------------------------


@pytest.fixture
def redis_client():
    return lib_redis.redis_client()


def test_a_grant_belongs_to_its_workspace_and_its_own_scopes(redis_client):
    grant = display_tokens.Grant(workspace=7, socket="/s", mode="view", scopes=("demo:3",))
    token = display_tokens.issue(redis_client, grant, ttl=60)
    assert display_tokens.consume(redis_client, token) == grant
    assert grant.all_scopes == ("workspace:7", "demo:3")


def test_revoking_a_scope_forgets_its_unused_tokens_only(redis_client):
    demo = display_tokens.issue(redis_client, display_tokens.Grant(8, "/s", "view", ("demo:4",)), ttl=60)
    own = display_tokens.issue(redis_client, display_tokens.Grant(8, "/s", "control"), ttl=60)
    assert display_tokens.revoke_scope(redis_client, "demo:4") == 1
    assert display_tokens.consume(redis_client, demo) is None
    assert display_tokens.consume(redis_client, own) is not None


def test_connections_opened_before_a_revocation_end_and_later_ones_do_not(redis_client):
    opened = display_tokens.now(redis_client)
    assert not display_tokens.revoked_since(redis_client, ("workspace:9", "demo:5"), opened)
    display_tokens.revoke_scope(redis_client, "demo:5")
    assert display_tokens.revoked_since(redis_client, ("workspace:9", "demo:5"), opened)
    assert not display_tokens.revoked_since(redis_client, ("workspace:9",), opened)
    reopened = display_tokens.now(redis_client)
    assert not display_tokens.revoked_since(redis_client, ("workspace:9", "demo:5"), reopened)
    display_tokens.revoke(redis_client, 9)
    assert display_tokens.revoked_since(redis_client, ("workspace:9",), reopened)
