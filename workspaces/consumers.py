from __future__ import annotations

import logging
import secrets

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .lib.events import class_group, user_group
from .lib.outages import REDIS_ERRORS

logger = logging.getLogger(__name__)

# A value Redis keeps while it runs: a Redis restarted empty (its Channels
# groups gone with it) no longer has the one a socket saw when it joined.
EPOCH_KEY = "lattice:redis-epoch"


@sync_to_async
def _redis_epoch() -> str:
    from .lib.redis import redis_client

    client = redis_client()
    client.set(EPOCH_KEY, secrets.token_hex(8), nx=True)
    return (client.get(EPOCH_KEY) or b"").decode()


@database_sync_to_async
def _taught_classrooms(user) -> list[int]:
    from .models import Classroom

    return list(Classroom.objects.filter(teachers=user).values_list("pk", flat=True))


# Application close codes (4000-4999): the page shows why it stopped listening.
CLOSE_UNAUTHENTICATED = 4401
# Redis is away or came back empty: the page reconnects, and asks for what it shows again.
CLOSE_RESYNC = 1012  # "service restart"


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """One socket per page: delivers the signed-in user's events, nothing else."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accepting is an HTTP 403 on the wire and browsers
            # report only 1006; accepting first lets the page read 4401 and
            # stop reconnecting. (A foreign Origin is still refused at the
            # handshake, by AllowedHostsOriginValidator.)
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        groups = [user_group(user.pk)] + [class_group(c) for c in await _taught_classrooms(user)]
        try:
            self.epoch = await _redis_epoch()
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
        except REDIS_ERRORS as exc:
            # Accepted then closed, so the page sees a close it retries
            # (with its growing pause), not a failed handshake each time.
            logger.warning("events socket: Redis out of reach (%s)", exc)
            await self.accept()
            await self.close(code=CLOSE_RESYNC)
            return
        self.groups_joined = groups
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        # The socket is one-way; events.js pings every 25 s so that proxies
        # (nginx's proxy_read_timeout, load balancers) never see it idle.
        if content.get("type") == "ping":
            if not await self._same_redis():
                # Redis restarted: this socket's groups, and any event sent
                # meanwhile, are gone. A new socket joins them again and the
                # page resyncs on its "connected".
                await self.close(code=CLOSE_RESYNC)
                return
            await self.send_json({"type": "pong"})

    async def _same_redis(self) -> bool:
        try:
            return await _redis_epoch() == self.epoch
        except REDIS_ERRORS:
            return False

    async def user_event(self, message: dict) -> None:
        await self.send_json(message["event"])
