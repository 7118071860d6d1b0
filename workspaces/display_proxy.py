"""The display proxy: websockify with our tokens, Origin check, view-only filter and revocation.

Run as ``python -m workspaces.display_proxy``. A browser connects to
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
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import threading
from urllib.parse import parse_qs, urlparse

import redis
from websockify import auth_plugins, websockifyserver
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

from portal import env

from . import display_tokens
from .rfb_filter import Refused, ViewOnlyInput

_TOKEN_IN_TEXT = re.compile(r"token=[^&\s'\"]+")
REVOCATION_CHECK = 0.5  # seconds between two looks at the revocation marks


class RedisTokens:
    """Where tokens are consumed; websockify asks for a plugin object."""

    def __init__(self, src: str):
        self.redis = redis.Redis.from_url(src)

    def consume(self, token: str | None) -> display_tokens.Grant | None:
        return display_tokens.consume(self.redis, token or "")


class OriginCheck:
    """websockify auth plugin: only pages of the portal may open a display."""

    def __init__(self, src: str):
        self.allowed = set(src.split())

    def authenticate(self, headers, target_host: str | None, target_port: int | None) -> None:
        origin = headers.get("Origin")
        if origin not in self.allowed:
            raise auth_plugins.InvalidOriginError(expected=sorted(self.allowed), actual=origin)


class Handler(ProxyRequestHandler):
    grant: display_tokens.Grant | None = None
    input_filter: ViewOnlyInput | None = None

    def handle_upgrade(self) -> None:
        # Origin first: a page of another site must not even use up a token.
        self.auth_connection()
        self.validate_connection()
        super(websockifyserver.WebSockifyRequestHandler, self).handle_upgrade()

    def validate_connection(self) -> None:
        tokens: RedisTokens = self.server.token_plugin
        token = (parse_qs(urlparse(self.path).query).get("token") or [None])[0]
        grant = tokens.consume(token)
        if grant is None:
            # websockify's own message quotes the token; ours does not.
            raise self.server.EClose("Display token unknown, used or expired")
        self.grant = grant
        self.opened = display_tokens.now(tokens.redis)
        self.server.unix_target = grant.socket
        if grant.mode == "view":
            self.input_filter = ViewOnlyInput()

    def recv_frames(self):
        bufs, closed = super().recv_frames()
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
        while not done.wait(REVOCATION_CHECK):
            try:
                revoked = display_tokens.revoked_since(client, self.grant.all_scopes, self.opened)
            except redis.RedisError:
                continue  # Redis is back in a moment; the display stays open meanwhile
            if revoked:
                self.log_message("access to workspace %s was revoked; closing", self.grant.workspace)
                # The proxy loop sees the target close and ends the websocket.
                target.shutdown(socket.SHUT_RDWR)
                return

    def log_message(self, format: str, *args) -> None:
        super().log_message("%s", _TOKEN_IN_TEXT.sub("token=<hidden>", format % args))


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
    args = parser.parse_args(argv)
    if not args.origins:
        parser.error("--origins (or LATTICE_DISPLAY_ORIGINS) is required: the portal's own origin(s)")
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s display-proxy: %(message)s")
    server = WebSocketProxy(
        RequestHandlerClass=Handler,
        listen_host=host,
        listen_port=int(port),
        token_plugin=RedisTokens(args.redis),
        auth_plugin=OriginCheck(args.origins),
        heartbeat=30,
    )
    server.start_server()


if __name__ == "__main__":
    main()
