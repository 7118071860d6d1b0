"""Typed readers for settings that come from environment variables.

Every secret can also come from a file named by ``<NAME>_FILE`` so that
Docker/Kubernetes secrets work without putting the value in the environment.
A value that cannot be read or understood stops start-up with a message that
names the variable, never with a bare traceback from deep inside Django.

Read by the portal's settings and by the display proxy, which does not load
Django (workspaces/display/proxy.py): so this module imports no Django at
import time, only Django's error once a value is refused.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _refused(message: str) -> Exception:
    """The error that stops start-up: Django's own, so its settings report it as one of theirs."""
    from django.core.exceptions import ImproperlyConfigured

    return ImproperlyConfigured(message)


def string(name: str, default: str = "") -> str:
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise _refused(
                f"{name}_FILE={path}: cannot read it ({exc.strerror}). "
                f"Create that file (readable by this user) or unset {name}_FILE."
            ) from None
    return os.environ.get(name, default)


def boolean(name: str, default: bool = False) -> bool:
    raw = string(name, "1" if default else "0").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise _refused(f"{name}={raw!r} is not a boolean: use 1 or 0 (or true/false, yes/no, on/off).")


def _at_least(name: str, value: int | float, minimum: int | float | None) -> None:
    if minimum is not None and not value >= minimum:
        raise _refused(f"{name}={value!r}: it must be at least {minimum}.")


def integer(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = string(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise _refused(f"{name}={raw!r} is not a whole number.") from None
    _at_least(name, value, minimum)
    return value


def number(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = string(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        raise _refused(f"{name}={raw!r} is not a number.") from None
    _at_least(name, value, minimum)
    return value


def csv(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in string(name, default).split(",") if part.strip()]


def dimensions(name: str, default: str) -> tuple[int, int]:
    """A size such as 3840x2160: (width, height), each from 1 to 65535."""
    raw = string(name, default).strip().lower()
    width, sep, height = raw.partition("x")
    if not (
        sep and width.isdigit() and height.isdigit() and 0 < int(width) < 65536 and 0 < int(height) < 65536
    ):
        raise _refused(f"{name}={raw!r} is not a size: use WIDTHxHEIGHT, e.g. 3840x2160.")
    return int(width), int(height)


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of a few words, e.g. LATTICE_EGRESS_FIREWALL=site."""
    raw = string(name, default).strip().lower()
    if raw not in choices:
        raise _refused(f"{name}={raw!r}: use one of {', '.join(choices)}.")
    return raw
