"""Errors the engine raises. Every message is meant for the user to read."""

from __future__ import annotations


class EngineError(Exception):
    """Something the engine could not do. The message is meant for the user."""


class EngineUnavailable(EngineError):
    """The container engine does not answer."""


class ImageNotFound(EngineError):
    """An image a spec names is not on the engine."""


class ContainerNotFound(EngineError):
    """exec() or similar named a container the workspace does not have."""


class StartTimeout(EngineError):
    """The display did not answer in time; what start() created was removed."""


class StartFailed(EngineError):
    """A container exited while the workspace was starting."""


class InvalidSpecError(EngineError, ValueError):
    """A spec that can never start (a programming error, not an engine fault)."""


class BuildFailed(EngineError):
    """A build stopped; the message names the failing step and the error."""

    def __init__(self, message: str, step: str = "", error: str = "") -> None:
        super().__init__(message)
        self.step, self.error = step, error
