"""The display proxy: websockify with our tokens, Origin check, view-only filter and revocation.

Run as ``python -m workspaces.display.proxy``. A browser connects to
``ws://<proxy>/?token=<t>``; the token (single use, from Redis) alone decides
the target, a display's unix socket on this host, so a client can never
choose where it connects. Each connection runs in its own process (websockify
forks one per client); in it:

- a view-mode connection passes its client's bytes through ``ViewOnlyInput``,
  so no key, pointer, clipboard or resize reaches the desktop whatever the
  browser sends;
- a watcher ends the connection within a second once any of its scopes is
  revoked (the workspace stopped or was deleted, a demo ended, control was
  released).

Nothing it is sent may make it hold unbounded memory or reach anything but
the display: the display's socket is opened by ``sockets.open_display``
(no link followed; the listener must be the display container's own VNC
server, checked before a byte is relayed); a websocket message is at most
the clipboard limit plus a little; a view-only filter holds at most one RFB
message; connections are counted per workspace and per user (in Redis, so
every proxy process shares the counts).

Settings, from the environment: LATTICE_CLIPBOARD_MAX_BYTES (1 MiB),
LATTICE_DISPLAY_CONNECTIONS_PER_WORKSPACE (64: a class watching a demo),
LATTICE_DISPLAY_CONNECTIONS_PER_USER (8).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import importlib
import logging
import os
import pwd
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import redis
from websockify import auth_plugins, websockifyserver
from websockify.websocket import WebSocketWantReadError
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

from ..lib import env
from . import sockets, tokens
from .rfb_filter import DEFAULT_MAX_CLIPBOARD, Refused, ViewOnlyInput

_TOKEN_IN_TEXT = re.compile(r"token=[^&\s'\"]+")
REVOCATION_CHECK = 0.5  # seconds between two looks at the revocation marks
CONNECT_TIMEOUT = 5.0  # seconds for the display's socket to take the connection
CONTINUATION, BINARY = 0x0, 0x2  # websocket opcodes
RECV_SIZE = 1 << 18  # bytes read from a browser at once
# Room on top of the clipboard for a websocket message: every other RFB message is smaller.
MESSAGE_SLACK = 1 << 18


@dataclass(frozen=True)
class Limits:
    max_clipboard: int = DEFAULT_MAX_CLIPBOARD
    per_workspace: int = 64
    per_user: int = 8

    @property
    def max_message(self) -> int:
        return self.max_clipboard + MESSAGE_SLACK

    @classmethod
    def from_environment(cls) -> Limits:
        return cls(
            max_clipboard=env.integer("LATTICE_CLIPBOARD_MAX_BYTES", cls.max_clipboard, minimum=0),
            per_workspace=env.integer(
                "LATTICE_DISPLAY_CONNECTIONS_PER_WORKSPACE", cls.per_workspace, minimum=1
            ),
            per_user=env.integer("LATTICE_DISPLAY_CONNECTIONS_PER_USER", cls.per_user, minimum=1),
        )


class MessageTooBig(Exception):
    """A websocket message over the proxy's limit: the connection ends."""


class BoundedWebSocket(websockifyserver.CompatibleWebSocket):
    """websockify's websocket, refusing a message over ``max_message`` as soon as its header says so.

    websockify itself buffers whatever length a frame announces, and joins
    continuation frames without end.
    """

    max_message = Limits().max_message

    def _recv(self) -> bool:
        # websockify reads 4 KiB at a time and copies its whole buffer at each
        # read: quadratic in a message's size. Larger reads keep a message of
        # max_message to a few copies.
        try:
            data = self.socket.recv(RECV_SIZE)
        except OSError as exc:
            if exc.errno == errno.EWOULDBLOCK:
                raise WebSocketWantReadError from None
            raise
        if not data:
            return False
        self._recv_buffer += data
        return True

    def _decode_hybi(self, buf):
        announced = _announced_length(buf)
        if announced is None:
            return super()._decode_hybi(buf)
        if announced > self.max_message:
            raise MessageTooBig(f"a websocket frame of {announced} bytes (at most {self.max_message})")
        # Each frame is checked here, at its header: a continuation frame adds
        # to the message it continues. websockify joins them only later, in
        # _recvmsg, which hands back whole messages, so the check must be here.
        if buf[0] & 0x0F == CONTINUATION and self._fragmented_length() + announced > self.max_message:
            raise MessageTooBig(f"a fragmented websocket message over {self.max_message} bytes")
        return super()._decode_hybi(buf)

    def _fragmented_length(self) -> int:
        """The bytes of the unfinished fragmented message: joined so far, and in frames decoded but not yet joined."""
        length = len(self._partial_msg)
        for frame in self._recv_queue:
            if frame["opcode"] == CONTINUATION:
                length = 0 if frame["fin"] else length + len(frame["payload"])
            elif frame["opcode"] == BINARY:
                length = 0 if frame["fin"] else len(frame["payload"])
        return length


def _announced_length(buf: bytes) -> int | None:
    """The payload length a websocket frame header announces, or None until the header is in."""
    if len(buf) < 2:
        return None
    length = buf[1] & 0x7F
    if length == 126:
        return struct.unpack(">H", buf[2:4])[0] if len(buf) >= 4 else None
    if length == 127:
        return struct.unpack(">Q", buf[2:10])[0] if len(buf) >= 10 else None
    return length


class RedisTokens:
    """Where tokens are consumed; websockify asks for a plugin object."""

    def __init__(self, src: str):
        self.redis = redis.Redis.from_url(src)

    def consume(self, token: str | None) -> tokens.Grant | None:
        return tokens.consume(self.redis, token or "")


class OriginCheck:
    """websockify auth plugin: only pages of the portal may open a display."""

    def __init__(self, src: str):
        self.allowed = set(src.split())

    def authenticate(self, headers, target_host: str | None, target_port: int | None) -> None:
        origin = headers.get("Origin")
        if origin not in self.allowed:
            raise auth_plugins.InvalidOriginError(expected=sorted(self.allowed), actual=origin)


class Handler(ProxyRequestHandler):
    SocketClass = BoundedWebSocket
    grant: tokens.Grant | None = None
    input_filter: ViewOnlyInput | None = None
    connection: str | None = None  # this connection's id in the per-workspace and per-user counts
    display: socket.socket | None = None  # connected and checked before the websocket opens

    def handle_upgrade(self) -> None:
        # Origin first: a page of another site must not even use up a token.
        self.auth_connection()
        try:
            self.validate_connection()
            super(websockifyserver.WebSockifyRequestHandler, self).handle_upgrade()
        finally:
            self._release()

    def validate_connection(self) -> None:
        store: RedisTokens = self.server.token_plugin
        token = (parse_qs(urlparse(self.path).query).get("token") or [None])[0]
        grant = store.consume(token)
        if grant is None:
            # websockify's own message quotes the token; ours does not.
            raise self.server.EClose("Display token unknown, used or expired")
        self.grant = grant
        self.opened = tokens.now(store.redis)
        limits: Limits = self.server.limits
        if grant.user is None:
            raise self.server.EClose("Display token names no user; ask for a new one")
        self.connection = tokens.open_connection(store.redis, grant, limits.per_workspace, limits.per_user)
        if self.connection is None:
            self.log_message(
                "too many connections to workspace %s or of user %s", grant.workspace, grant.user
            )
            raise self.server.EClose("Too many open screens: close one and try again")
        self.display = self._open_display(grant)
        if grant.mode == "view":
            self.input_filter = ViewOnlyInput(max_clipboard=limits.max_clipboard)

    def _open_display(self, grant: tokens.Grant) -> socket.socket:
        """The display's socket, connected and checked; nothing of the client's is sent yet."""
        try:
            sock = sockets.open_display(grant.target(), CONNECT_TIMEOUT)
        except sockets.DisplayRefused as exc:
            # Someone put something else where the display's socket belongs: say so, keep the token out.
            self.log_message("REFUSED the display of workspace %s: %s", grant.workspace, exc)
            raise self.server.EClose("The display did not answer as it should; nothing was sent") from None
        except OSError as exc:
            self.log_message("the display of workspace %s did not answer: %s", grant.workspace, exc)
            raise self.server.EClose("The display did not answer") from None
        sock.settimeout(None)  # websockify selects before it reads or writes
        self.log_message(
            "connecting to unix socket %s: workspace %s's VNC server (pid %d)",
            grant.socket,
            grant.workspace,
            grant.server_pid,
        )
        return sock

    def new_websocket_client(self) -> None:
        target, self.display = self.display, None
        try:
            self.do_proxy(target)
        finally:
            target.close()

    def _release(self) -> None:
        if self.display is not None:
            self.display.close()
            self.display = None
        if self.connection is not None:
            connection, self.connection = self.connection, None
            try:
                tokens.close_connection(self.server.token_plugin.redis, self.grant, connection)
            except redis.RedisError as exc:
                self.log_message("could not uncount a connection (it expires by itself): %s", exc)

    def recv_frames(self):
        try:
            bufs, closed = super().recv_frames()
        except MessageTooBig as exc:
            self.log_message("closing a connection to workspace %s: %s", self.grant.workspace, exc)
            raise self.CClose(1009, "Message too big") from None
        if self.input_filter is not None:
            try:
                bufs = [kept for kept in map(self.input_filter.feed, bufs) if kept]
            except Refused as exc:
                self.log_message("closing a view-only connection: %s", exc)
                raise self.CClose(1008, "View-only: input is not allowed") from None
        return bufs, closed

    def do_proxy(self, target: socket.socket) -> None:
        done = threading.Event()
        watcher = threading.Thread(target=self._end_when_revoked, args=(target, done), daemon=True)
        watcher.start()
        try:
            super().do_proxy(target)
        finally:
            done.set()

    def _end_when_revoked(self, target: socket.socket, done: threading.Event) -> None:
        client = self.server.token_plugin.redis
        next_heartbeat = time.monotonic() + tokens.CONNECTION_HEARTBEAT
        while not done.wait(REVOCATION_CHECK):
            try:
                revoked = tokens.revoked_since(client, self.grant.all_scopes, self.opened)
                if time.monotonic() >= next_heartbeat and self.connection is not None:
                    tokens.connection_alive(client, self.grant, self.connection)
                    next_heartbeat = time.monotonic() + tokens.CONNECTION_HEARTBEAT
            except redis.RedisError:
                continue  # Redis is back in a moment; the display stays open meanwhile
            if revoked:
                self.log_message("access to workspace %s was revoked; closing", self.grant.workspace)
                # The proxy loop sees the target close and ends the websocket.
                target.shutdown(socket.SHUT_RDWR)
                return

    def log_message(self, format: str, *args) -> None:
        super().log_message("%s", _TOKEN_IN_TEXT.sub("token=<hidden>", format % args))


# Standard modules the proxy would only import on first use (resolving the
# listen address, a client's request): loaded while they can still be read.
_LOADED_LATER = (
    "encodings.idna",
    "encodings.ascii",
    "encodings.latin_1",
    "email.feedparser",
    "email.utils",
    "multiprocessing.popen_fork",
)
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


def drop_privileges(user: str) -> None:
    """Become ``user``, in its own groups only, for good: no capabilities, no way back, no new privileges.

    Done in the process, after every module is imported and before anything
    is listened to: the interpreter and its standard library may live where
    only root can read (a pyenv under /root), and nothing from a client has
    been read yet.
    """
    for module in _LOADED_LATER:
        importlib.import_module(module)
    entry = pwd.getpwnam(user)
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(64):  # empty the bounding set: no file capability can bring one back
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the last capability this kernel knows
            raise OSError(ctypes.get_errno(), f"could not drop capability {capability}")
    os.initgroups(user, entry.pw_gid)
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "could not set no_new_privs")
    os.environ["HOME"] = entry.pw_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default=os.environ.get("LATTICE_DISPLAY_PROXY_LISTEN", "127.0.0.1:6080"))
    # Read like the portal's settings, so REDIS_URL_FILE works here too.
    parser.add_argument("--redis", default=env.string("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--origins",
        default=os.environ.get("LATTICE_DISPLAY_ORIGINS", ""),
        help="space-separated origins allowed to connect, e.g. 'http://127.0.0.1:8000'",
    )
    parser.add_argument(
        "--user",
        help="started as root: run as this unprivileged user (make run: lattice-display, scripts/display-proxy)",
    )
    args = parser.parse_args(argv)
    if not args.origins:
        parser.error("--origins (or LATTICE_DISPLAY_ORIGINS) is required: the portal's own origin(s)")
    host, _, port = args.listen.rpartition(":")
    limits = Limits.from_environment()
    BoundedWebSocket.max_message = limits.max_message
    logging.basicConfig(level=logging.INFO, format="%(asctime)s display-proxy: %(message)s")
    server = WebSocketProxy(
        RequestHandlerClass=Handler,
        listen_host=host,
        listen_port=int(port),
        token_plugin=RedisTokens(args.redis),
        auth_plugin=OriginCheck(args.origins),
        heartbeat=30,
    )
    server.limits = limits
    if args.user:
        drop_privileges(args.user)
        logging.info("running as %s (uid %d), groups %s", args.user, os.getuid(), os.getgroups())
    server.start_server()


if __name__ == "__main__":
    main()
