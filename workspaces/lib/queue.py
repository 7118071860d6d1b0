"""Queue a registered Celery task by its name, so a service says what must happen without importing tasks.

The task is looked up in the app's registry when the message is sent, not
when this module is imported: the services sit below the tasks and never
import them, and whatever replaced a task's ``delay`` by then (a test's
stand-in) is what runs.
"""

from __future__ import annotations

from celery import Task, current_app
from django.db import transaction


def registered(name: str) -> bool:
    """Whether this version of Lattice has a task of that name."""
    if name not in current_app.tasks:
        # A web process imports no task module itself: this runs Celery's
        # autodiscovery (workspaces.tasks), as a worker does when it starts.
        current_app.loader.import_default_modules()
    return name in current_app.tasks


def task(name: str) -> Task:
    """The registered task of that name; KeyError (NotRegistered) when there is none."""
    registered(name)
    return current_app.tasks[name]


def now(name: str, *args, **kwargs) -> None:
    """Send the task at once, whatever becomes of the current transaction (e.g. a capture with its own expiry)."""
    task(name).delay(*args, **kwargs)


def later(name: str, *args, **kwargs) -> None:
    """Send the task once the current transaction commits (at once outside one), never after a rollback."""
    transaction.on_commit(lambda: now(name, *args, **kwargs))
