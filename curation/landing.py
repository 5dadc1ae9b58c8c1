"""Landing-zone conventions, pure (no Dagster, no boto3).

Data arrives in drops: one subfolder (or S3 prefix) ``<landing>/<drop_id>/`` per delivery, complete
once ``<landing>/<drop_id>/_SUCCESS`` exists. The drop id becomes a Dagster dynamic partition key,
a path component and a CLI argument (comma lists, ``a..b`` ranges), so it is checked here once.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .hashing import lines_sha256

SUCCESS_MARKER = "_SUCCESS"
TAKEDOWNS_FOLDER = "_takedowns"  # <landing>/<pool prefix>/_takedowns/: takedown files, no drop
MAX_DROP_ID_LENGTH = 128


def drop_id_problem(drop_id: object) -> str | None:
    """Why `drop_id` is not a usable drop id, or None when it is."""
    if not isinstance(drop_id, str):
        return f"must be a string, got {type(drop_id).__name__}"
    if drop_id == "":
        return "is empty"
    if drop_id == TAKEDOWNS_FOLDER:
        return "is reserved for takedown files"
    if len(drop_id) > MAX_DROP_ID_LENGTH:
        return f"is too long ({len(drop_id)} characters, at most {MAX_DROP_ID_LENGTH})"
    try:
        drop_id.encode("utf-8")
    except UnicodeEncodeError as exc:  # a folder name of non-UTF-8 bytes (surrogateescape)
        bad = drop_id[exc.start]
        raw = bad.encode("utf-8", "surrogateescape") if 0xDC80 <= ord(bad) <= 0xDCFF else b""
        what = f"byte 0x{raw.hex()}" if raw else f"U+{ord(bad):04X}"
        return f"is not valid UTF-8 ({what} at character {exc.start}): cannot be a partition key"
    for ch in drop_id:
        if unicodedata.category(ch) == "Cc":
            return f"contains a control character (U+{ord(ch):04X})"
    if "/" in drop_id:
        return "contains '/' (a drop id is a single path component)"
    if "\\" in drop_id:
        return "contains '\\' (a drop id is a single path component)"
    if ".." in drop_id:
        return "contains '..' (path traversal, and '..' separates a partition range)"
    if drop_id.startswith("."):
        return "starts with '.' (hidden or temporary folder)"
    if "," in drop_id:
        return "contains ',' (separates partition keys in lists)"
    if drop_id != drop_id.strip():
        return "has leading or trailing whitespace"
    return None


def validate_drop_id(drop_id: str) -> str:
    """Return `drop_id` unchanged, or raise ValueError naming the id and the problem."""
    problem = drop_id_problem(drop_id)
    if problem is not None:
        raise ValueError(f"invalid drop id {drop_id!r}: {problem}")
    return drop_id


def is_hidden_part(relative_name: str) -> bool:
    """True for non-data files: the marker and hidden/temporary paths (.DS_Store, .x.part)."""
    parts = relative_name.split("/")
    return relative_name == SUCCESS_MARKER or any(p.startswith(".") for p in parts)


def content_fingerprint(entries: Iterable[tuple[str, int, str]]) -> str:
    """Order-independent fingerprint of a drop's files from (relative name, size, content tag).

    The tag is the S3 ETag or a local content hash, so the same files delivered again under a new
    drop id give the same fingerprint.
    """
    return lines_sha256(f"{name}\0{size}\0{tag}" for name, size, tag in sorted(entries))[:32]
