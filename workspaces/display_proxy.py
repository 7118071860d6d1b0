"""The display proxy: websockify with our token lookup, Origin check and quiet logs.

Run as ``python -m workspaces.display_proxy``. A browser connects to
``ws://<proxy>/?token=<t>``; the token (single use, from Redis) alone decides
the target, so a client can never choose where it connects.
"""

from __future__ import annotations

import argparse
import logging
import os
import re

import redis
from websockify import auth_plugins
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

from . import display_tokens

_TOKEN_IN_TEXT = re.compile(r"token=[^&\s'\"]+")


class RedisTokens:
    """websockify token plugin: a token is good for one connection."""

    def __init__(self, src: str):
        self.redis = redis.Redis.from_url(src)

    def lookup(self, token: str) -> tuple[str, int] | None:
        grant = display_tokens.consume(self.redis, token)
        return None if grant is None else (grant.host, grant.port)


class OriginCheck:
    """websockify auth plugin: only pages of the portal may open a display."""

    def __init__(self, src: str):
        self.allowed = set(src.split())

    def authenticate(self, headers, target_host: str, target_port: int) -> None:
        origin = headers.get("Origin")
        if origin not in self.allowed:
            raise auth_plugins.InvalidOriginError(expected=sorted(self.allowed), actual=origin)


class Handler(ProxyRequestHandler):
    def get_target(self, target_plugin):
        try:
            return super().get_target(target_plugin)
        except self.server.EClose:
            # websockify's own message quotes the token; ours does not.
            raise self.server.EClose("Display token unknown, used or expired") from None

    def log_message(self, format: str, *args) -> None:
        super().log_message("%s", _TOKEN_IN_TEXT.sub("token=<hidden>", format % args))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default=os.environ.get("LATTICE_DISPLAY_PROXY_LISTEN", "127.0.0.1:6080"))
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
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
