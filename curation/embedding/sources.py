"""Turn a drop (a folder, or a list of uris) into Items for an embedder of a given kind.

Files are parsed by `curation.items` (the one parser per item kind, shared with the `raw`
asset), so the refs and item ids an embedder reports are the ones raw recorded:
images: one item per file; text: *.txt one item per file, *.jsonl one item per line
(ref `file.jsonl#L<n>`); vectors: *.parquet. Files of another type become quarantined items
("unsupported format"), so a drop goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .. import items as parser
from ..landing import is_hidden_part
from .base import Item

KINDS = tuple(parser.EMBEDDER_KIND.values())
EXTENSIONS = {kind: parser.EXTENSIONS[m] for m, kind in parser.EMBEDDER_KIND.items()}


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
    for uri in uris:
        reason = parser.unsupported(uri, kind)
        if reason is not None:
            yield Item(ref=uri, error=reason)
        elif kind == "text" and parser.suffix(uri) == ".jsonl":
            yield from jsonl_items(uri, read_bytes)
        elif read_bytes is not None:
            yield Item(ref=uri, reader=read_bytes)
        else:
            yield Item(ref=uri, path=Path(uri))


def parsed_items(parsed: parser.Parsed) -> Iterator[Item]:
    """Items of an already parsed text file: its lines' texts, then its quarantined refs."""
    for item in parsed.items:
        yield Item(ref=item.ref, text=item.text)
    for ref, reason in parsed.quarantined:
        yield Item(ref=ref, error=reason)


def jsonl_items(uri: str, read_bytes: Callable[[str], bytes] | None = None) -> Iterator[Item]:
    """One Item per non-blank line (curation.items.parse_jsonl); bad lines become quarantined
    items naming the line."""
    try:
        data = read_bytes(uri) if read_bytes is not None else Path(uri).read_bytes()
    except OSError as exc:
        yield Item(ref=uri, error=f"unreadable: {type(exc).__name__}: {exc}")
        return
    yield from parsed_items(parser.parse_jsonl(uri, data))
