"""How a failure is told to the person who waits for the work."""

from __future__ import annotations

import logging

from ..engine.base import EngineError
from .backups import BackupError

logger = logging.getLogger(__name__)


def failure_message(exc: BaseException, doing: str) -> str:
    """The engine's own words (or the backup store's), or that Lattice itself broke."""
    if isinstance(exc, EngineError | BackupError):
        return str(exc)[:300]
    logger.exception("%s failed", doing)
    return f"{doing} failed because of an error in Lattice ({type(exc).__name__}); try again."[:300]
