"""Deterministic engine object names, so start/stop/remove find what exists,
and image references taken apart (split_reference) as the engine reads them.

Every name is <prefix>-...; owners and workspace ids are escaped so that any
Django username (letters of any script, digits, @.+-_) or id gives a valid
docker name, and two different inputs never give the same name.
"""

from __future__ import annotations

import hashlib
import re

_PREFIX = re.compile(r"^[a-z0-9]{1,32}$")
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# Docker has no documented name limit, but volume names become a path
# component on the host (255 bytes at most): leave room for the prefix.
_MAX_ESCAPED = 180


def check_prefix(prefix: str) -> str:
    # No '-' in the prefix: the names below split on it.
    if not _PREFIX.match(prefix):
        raise ValueError(f"bad engine prefix {prefix!r}: 1-32 lowercase letters and digits")
    return prefix


def escape(value: str) -> str:
    """Keep [a-z0-9]; every other UTF-8 byte becomes _xx (lowercase hex).

    '_' is always the start of an escape, so the mapping is one to one, and
    upper case is escaped because Django usernames are case sensitive while
    DNS-like names are not ('Bob' and 'bob' are two users).
    """
    out = []
    for ch in value:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode("utf-8"))
    escaped = "".join(out)
    if len(escaped) > _MAX_ESCAPED:
        # '--' never occurs in an escaped value, so shortened names live apart
        # from full ones; the digest keeps them distinct from each other.
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:24]
        escaped = f"{escaped[:150]}--{digest}"
    return escaped or "_"


def workspace_base(prefix: str, workspace_id: str) -> str:
    # The escaped id holds no '-', so <base>-<container> splits one way only.
    return f"{prefix}-ws{escape(workspace_id)}"


def network(prefix: str, workspace_id: str) -> str:
    return workspace_base(prefix, workspace_id)


def x11_volume(prefix: str, workspace_id: str) -> str:
    # A volume, not a container: it may share the form of a container name.
    return f"{workspace_base(prefix, workspace_id)}-x11"


def container(prefix: str, workspace_id: str, name: str) -> str:
    return f"{workspace_base(prefix, workspace_id)}-{name}"


def data_volume(prefix: str, owner_id: int) -> str:
    """The one name of a user's data volume, by the user's stable id (never the username).

    A username can be given to a new account once the old one is deleted; an
    id never is, so a new "alice" never opens the old one's files. A lone '-'
    never occurs in an escaped username, so no legacy name (below) equals one
    of these.
    """
    if isinstance(owner_id, bool) or not isinstance(owner_id, int) or owner_id < 1:
        raise ValueError(f"a data volume is named by a user id (a positive integer), not {owner_id!r}")
    return f"{prefix}-data-u-{owner_id}"


def legacy_data_volume(prefix: str, username: str) -> str:
    """How data volumes were named before they were keyed by id: only to migrate them."""
    return f"{prefix}-data-{escape(username)}"


def display_socket_dir(prefix: str, workspace_id: str) -> str:
    """The folder (under the engine's socket root) that holds one display's VNC socket."""
    return workspace_base(prefix, workspace_id)


def workspace_of_socket_dir(prefix: str, folder: str) -> str | None:
    """The workspace id a socket folder name belongs to, or None when it is not one of ours."""
    head = f"{prefix}-ws"
    if not folder.startswith(head) or "--" in folder:
        return None
    return unescape(folder[len(head) :])


def unescape(escaped: str) -> str | None:
    """escape()'s inverse; None for text escape() never makes."""
    out = bytearray()
    i = 0
    while i < len(escaped):
        ch = escaped[i]
        if ch == "_":
            pair = escaped[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in "0123456789abcdef" for c in pair):
                return None
            out.append(int(pair, 16))
            i += 3
        elif ch in _SAFE:
            out.append(ord(ch))
            i += 1
        else:
            return None
    try:
        value = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return value if escape(value) == escaped else None


def split_reference(reference: str) -> tuple[str, str]:
    """(repository, tag) or (repository, "sha256:…") for a digest; no tag means latest.

    "127.0.0.1:5000/course/python" has no tag: the colon belongs to the registry.
    """
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        name = repository.rsplit("/", 1)[-1]
        if ":" in name:  # name:tag@digest: the digest decides
            repository = repository.rsplit(":", 1)[0]
        return repository, digest
    if ":" in reference.rsplit("/", 1)[-1]:
        repository, tag = reference.rsplit(":", 1)
        return repository, tag
    return reference, "latest"


def full_reference(reference: str) -> str:
    """The reference with its tag (":latest" when none) or digest, as the engine names it."""
    repository, ref = split_reference(reference)
    return f"{repository}@{ref}" if ":" in ref else f"{repository}:{ref}"
