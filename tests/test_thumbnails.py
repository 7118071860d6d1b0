"""The class grid's pictures: taken by the worker, served from Redis, at most one capture at a time."""

from __future__ import annotations

import pytest

from workspaces import tasks, thumbnails


@pytest.fixture
def captures(monkeypatch):
    asked: list[int] = []
    monkeypatch.setattr(tasks.capture_thumbnail, "delay", asked.append)
    for key in ("PICTURE", "CAPTURING"):
        thumbnails.redis_client().delete(getattr(thumbnails, key) + "41")
    return asked


def test_a_current_picture_is_served_without_a_capture(captures):
    thumbnails.store(41, b"png-now")
    assert thumbnails.picture(41) == b"png-now"
    assert captures == []


def test_an_old_picture_is_served_at_once_and_one_capture_follows(captures, monkeypatch):
    thumbnails.store(41, b"png-old")
    later = thumbnails.time.time() + thumbnails.MAX_AGE + 1
    monkeypatch.setattr(thumbnails.time, "time", lambda: later)
    # Three tabs ask at once: each gets the old picture, one capture is queued.
    assert [thumbnails.picture(41) for _ in range(3)] == [b"png-old"] * 3
    assert captures == [41]
    thumbnails.captured(41)  # the worker is done: the next stale ask may capture again
    thumbnails.picture(41)
    assert captures == [41, 41]


def test_no_picture_yet_waits_briefly_then_says_none(captures):
    assert thumbnails.picture(41, wait=0.3) is None
    assert captures == [41]
