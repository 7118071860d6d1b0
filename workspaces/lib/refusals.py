"""Why a service said no, and what that is over HTTP.

Services (lifecycle, saving, the catalog, classrooms) raise subclasses of
these; the API's exception handler answers ``{"detail": <message>}`` with the
class's status, and pages show the message. So a view never translates errors
itself, and a new refusal is one class in the service that raises it.
"""

from __future__ import annotations


class Refusal(Exception):
    """The message is for the person who asked; ``status`` is the HTTP answer."""

    status = 400


class BadInput(Refusal, ValueError):
    """What was asked for is wrong: the message says what to change."""

    status = 400


class Forbidden(Refusal):
    """It exists, and this person may not do it."""

    status = 403


class Missing(Refusal, LookupError):
    """It does not exist, or not for this person (another user's things never do)."""

    status = 404


class Conflict(Refusal):
    """Not in the state it is in now; maybe later."""

    status = 409


class OverLimit(Refusal):
    """Over a limit; the message has the figures."""

    status = 429


class Unavailable(Refusal):
    """Not there yet; asking again in a moment works."""

    status = 503
