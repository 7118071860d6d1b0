"""Live events for a user's open pages, sent through the Channels layer.

Anything may publish (views, Celery tasks); the websocket consumer only joins
the user's group. Events are plain dicts: ``{"type", "progress", "message", ...}``.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def class_group(classroom_id: int) -> str:
    """The teachers of one classroom: they follow its students' workspaces."""
    return f"class-{classroom_id}"


def publish(user_id: int, event: dict) -> None:
    publish_group(user_group(user_id), event)


def publish_group(group: str, event: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(group, {"type": "user.event", "event": event})
