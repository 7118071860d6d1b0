from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .events import class_group, user_group


@database_sync_to_async
def _taught_classrooms(user) -> list[int]:
    from .models import Classroom

    return list(Classroom.objects.filter(teachers=user).values_list("pk", flat=True))


# Application close codes (4000-4999): the page shows why it stopped listening.
CLOSE_UNAUTHENTICATED = 4401


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
        self.groups_joined = [user_group(user.pk)] + [class_group(c) for c in await _taught_classrooms(user)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        # The socket is one-way; events.js pings every 25 s so that proxies
        # (nginx's proxy_read_timeout, load balancers) never see it idle.
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def user_event(self, message: dict) -> None:
        await self.send_json(message["event"])
