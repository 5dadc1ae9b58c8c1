"""Turn a drop (a folder, or a list of uris) into Items for an embedder of a given kind.

images: *.png / *.jpg / *.jpeg / *.webp, one item per file;
text:   *.txt one item per file, *.jsonl one item per line ({"id": ..., "text": ...});
vectors: *.parquet (item_id + vector columns).
Files of another type become quarantined items ("unsupported format"), so a drop goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..landing import is_hidden_part
from .base import Item

KINDS = ("image", "text", "vectors")
EXTENSIONS = {
    "image": (".png", ".jpg", ".jpeg", ".webp"),
    "text": (".txt", ".jsonl"),
    "vectors": (".parquet",),
}


def _suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def folder_files(folder: str | Path) -> list[Path]:
    """Data files under a folder (recursively), sorted; _SUCCESS and hidden files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not is_hidden_part(rel):
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def folder_items(folder: str | Path, kind: str) -> Iterator[Item]:
    return file_items((str(p) for p in folder_files(folder)), kind)


def file_items(
    uris: Iterable[str], kind: str, read_bytes: Callable[[str], bytes] | None = None
) -> Iterator[Item]:
    """Items for `uris` (local paths, or any uri `read_bytes` can fetch, e.g. s3://...)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {', '.join(KINDS)}")
    accepted = EXTENSIONS[kind]
    for uri in uris:
        suffix = _suffix(uri)
        if suffix not in accepted:
            yield Item(
                ref=uri,
                error=f"unsupported format: {suffix or 'no extension'} in a {kind} drop "
                f"(accepted: {', '.join(accepted)})",
            )
        elif kind == "text" and suffix == ".jsonl":
            yield from jsonl_items(uri, read_bytes)
        elif read_bytes is not None:
            yield Item(ref=uri, reader=read_bytes)
        else:
            yield Item(ref=uri, path=Path(uri))


def jsonl_items(uri: str, read_bytes: Callable[[str], bytes] | None = None) -> Iterator[Item]:
    """One Item per non-blank line; bad lines become quarantined items naming the line."""
    try:
        if read_bytes is not None:
            lines: Iterable[bytes] = read_bytes(uri).splitlines()
        else:
            lines = _file_lines(Path(uri))
        for n, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            ref = f"{uri}#L{n}"
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield Item(ref=ref, error=f"not UTF-8: {exc.reason} at byte {exc.start}")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Item(ref=ref, error=f"invalid JSON line: {exc.msg}")
                continue
            if not isinstance(record, dict) or "text" not in record or "id" not in record:
                yield Item(ref=ref, error="invalid JSONL record: needs 'id' and 'text'")
                continue
            if not isinstance(record["text"], str):
                yield Item(ref=ref, error="invalid JSONL record: 'text' is not a string")
                continue
            yield Item(ref=f"{uri}#{record['id']}", text=record["text"])
    except OSError as exc:
        yield Item(ref=uri, error=f"unreadable: {type(exc).__name__}: {exc}")


def _file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from fh
