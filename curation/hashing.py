"""Every content hash of the platform, in one place (tests/core/test_layering.py checks that
no other module imports hashlib).

Item ids, weights and model identities, drop fingerprints, fit signatures and subset
manifests are all sha256 hex digests; the selection's per-item keys are 64-bit BLAKE2b.
The byte layouts below are stored (ids, versions, manifests): changing one re-keys data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_FILE_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_hex(data: bytes | str) -> str:
    """sha256 of bytes (a str is hashed as UTF-8): the item id of content, for one."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def json_sha256(obj, separators: tuple[str, str] | None = (",", ":")) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; non-JSON values as str)."""
    return sha256_hex(json.dumps(obj, sort_keys=True, separators=separators, default=str))


def lines_sha256(lines: Iterable[str]) -> str:
    """sha256 of the lines, each followed by a newline, streamed (no joined string)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path, cache: bool = True) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks; cached per (path, size, mtime) unless
    `cache` is False (weights are hashed on every code-location load: the cache saves that)."""
    path = Path(path)
    key = None
    if cache:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _FILE_CACHE:
            return _FILE_CACHE[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    if key is not None:
        _FILE_CACHE[key] = digest.hexdigest()
    return digest.hexdigest()


def tree_sha256(directory: str | Path) -> str:
    """sha256 over every file of a model folder (names and contents), in sorted order;
    hidden files and README.md do not count."""
    directory = Path(directory)
    entries = []
    for p in sorted(q for q in directory.rglob("*") if q.is_file()):
        rel = p.relative_to(directory).as_posix()
        if rel.startswith(".") or "/." in rel or rel == "README.md":
            continue
        entries.append(f"{rel}\0{file_sha256(p)}")
    return lines_sha256(entries)


def sorted_ids_sha256(item_ids) -> str:
    """sha256 of the sorted ids joined by newlines (streamed in chunks: no giant string)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = item_ids if isinstance(item_ids, pa.Array | pa.ChunkedArray) else pa.array(
        list(item_ids), pa.string())
    arr = arr.take(pc.sort_indices(arr))
    digest = hashlib.sha256()
    chunk = 1 << 16
    for start in range(0, len(arr), chunk):
        part = arr.slice(start, chunk).to_pylist()
        digest.update((("\n" if start else "") + "\n".join(part)).encode())
    return digest.hexdigest()


def blake2b_u64(raw: Iterable[bytes]) -> np.ndarray:
    """uint64 per value: its BLAKE2b digest with digest_size=8, read little-endian."""
    digest = b"".join([hashlib.blake2b(b, digest_size=8).digest() for b in raw])
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)
