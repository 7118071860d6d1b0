"""Live events for a user's open pages, sent through the Channels layer.

Anything may publish (views, Celery tasks); the websocket consumer only joins
the user's group. Events are plain dicts: ``{"type", "progress", "message", ...}``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
from concurrent.futures import Future

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def class_group(classroom_id: int) -> str:
    """The teachers of one classroom: they follow its students' workspaces."""
    return f"class-{classroom_id}"


def publish(user_id: int, event: dict) -> None:
    publish_group(user_group(user_id), event)


def publish_group(group: str, event: dict) -> None:
    """Queue the event and return at once; events leave in the order they were published."""
    _sender().put((group, {"type": "user.event", "event": event}))


class _Sender:
    """One event loop thread per process that sends events, one after another.

    ``async_to_sync(group_send)`` per event makes a new event loop, and with
    it a new Redis connection, each time: about 6 ms that a workspace start
    paid some eight times on its critical path. Here the connection stays
    open and the caller never waits for Redis.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=self._run, name="lattice-events", daemon=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        layer = get_channel_layer()
        while True:
            item = await self.queue.get()
            if isinstance(item, Future):  # a flush marker: everything before it is sent
                item.set_result(None)
                continue
            group, message = item
            try:
                await layer.group_send(group, message)
            except Exception:
                # A lost progress event must never fail the work it reports on.
                logger.exception("could not publish an event to %s", group)

    def put(self, item: tuple[str, dict] | Future) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def flush(self, timeout: float) -> None:
        marker: Future = Future()
        self.put(marker)
        marker.result(timeout)


_lock = threading.Lock()
_instance: _Sender | None = None


def _sender() -> _Sender:
    global _instance
    # A forked child (e.g. a prefork pool) has the object but not the thread.
    if _instance is None or _instance.pid != os.getpid():
        with _lock:
            if _instance is None or _instance.pid != os.getpid():
                _instance = _Sender()
    return _instance


@atexit.register
def _flush_at_exit() -> None:
    if _instance is not None and _instance.pid == os.getpid():
        # Exiting anyway: an event that cannot go out has nobody to tell.
        with contextlib.suppress(Exception):
            _instance.flush(timeout=2)
