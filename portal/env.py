"""Typed readers for settings that come from environment variables.

Every secret can also come from a file named by ``<NAME>_FILE`` so that
Docker/Kubernetes secrets work without putting the value in the environment.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def string(name: str, default: str = "") -> str:
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(name, default)


def boolean(name: str, default: bool = False) -> bool:
    raw = string(name, "1" if default else "0").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def integer(name: str, default: int) -> int:
    raw = string(name, str(default)).strip()
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None


def number(name: str, default: float) -> float:
    raw = string(name, str(default)).strip()
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def csv(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in string(name, default).split(",") if part.strip()]
