"""One parser per item kind (pure: no Dagster, no torch): a delivered file's bytes in, items out.

Both sides of the pipeline read files through this module, so they agree byte for byte on what
an item is, its id and its ref: the `raw` asset (what was delivered; its rows keep each item's
text or vector values, which the `embeddings` asset reads instead of the files) and the
embedders' sources (`curation.embedding.sources`, used by `curate embed`).

    images    *.png *.jpg *.jpeg *.webp   one item per file; id = sha256 of the file's bytes
    texts     *.txt                       one item per file (UTF-8, a BOM allowed); id = sha256
                                          of the file's bytes
              *.jsonl                     one item per line {"text": ..., "id": ... (optional)};
                                          lines are split on b"\\n" only (U+2028, U+0085 and a
                                          lone "\\r" stay inside the text), a BOM is dropped,
                                          id = sha256 of the text's UTF-8 bytes, ref file#L<n>
    vectors   *.parquet                   one item per row with `item_id` and `vector` (a list
                                          of numbers); other columns kept as metadata

Every delivered item is either parsed or quarantined with a reason, never both, never neither:
a file that cannot be read at all is one quarantined item; a bad line or row is one quarantined
item of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .hashing import sha256_hex

MODALITIES = ("images", "texts", "vectors")
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "images": (".png", ".jpg", ".jpeg", ".webp"),
    "texts": (".txt", ".jsonl"),
    "vectors": (".parquet",),
}
# the embedders name their kinds in the singular
EMBEDDER_KIND = {"images": "image", "texts": "text", "vectors": "vectors"}
BOM = b"\xef\xbb\xbf"


def modality_of(kind: str) -> str:
    """'image' or 'images' -> 'images' (the embedders' kind or a pool's modality)."""
    for modality, singular in EMBEDDER_KIND.items():
        if kind in (modality, singular):
            return modality
    raise ValueError(f"kind={kind!r}: use one of {', '.join(MODALITIES)}")


def suffix(uri: str) -> str:
    """Lower-case extension of the file name of a path or uri ('' when none)."""
    name = uri.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def unsupported(uri: str, kind: str) -> str | None:
    """The quarantine reason of a file this modality does not read, or None."""
    modality = modality_of(kind)
    accepted = EXTENSIONS[modality]
    ext = suffix(uri)
    if ext in accepted:
        return None
    return (
        f"unsupported format: {ext or 'no extension'} in a {modality} drop "
        f"(accepted: {', '.join(accepted)})"
    )


class TextRejected(ValueError):
    """The message is the quarantine reason."""


def text_problem(text: str) -> str | None:
    """Why a decoded text is not an item, or None."""
    if not text.strip():
        return "empty text (whitespace only)"
    if "\x00" in text:
        return "not text: contains NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"text holds a lone surrogate (U+{ord(text[exc.start]):04X} at character "
            f"{exc.start}): not encodable as UTF-8"
        )
    return None


def decode_text(data: bytes) -> str:
    """A .txt file's bytes -> its stripped text (a BOM is dropped). Raises TextRejected."""
    if len(data) == 0:
        raise TextRejected("empty file (0 bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextRejected(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    problem = text_problem(text)
    if problem is not None:
        raise TextRejected(problem)
    return text.strip()


def content_key(text: str) -> str:
    """The content of a text item whatever its container: sha256 of its words joined by one
    space. A text delivered as a JSONL record and again as a .txt file (other bytes, so
    another id) has one content key: what takedowns match re-deliveries by."""
    return sha256_hex(" ".join(text.split()))


@dataclass(frozen=True)
class ParsedItem:
    """One delivered item: `ref` names it (the file uri; `file#L<n>` for a JSONL line; the
    row's `uri` column or `file#row=<n>` for a Parquet row), `source` is the file's uri."""

    item_id: str
    ref: str
    size: int  # bytes of the item (4 per value for a vector)
    source: str
    row: int  # 0-based line or row in the file, -1 for a whole-file item
    meta: str = ""  # JSON of the extra fields ("" when none)
    text: str | None = None  # texts: what the embedder reads
    vector: np.ndarray | None = None  # vectors: the row's float32 values (raw keeps them)


@dataclass
class Parsed:
    items: list[ParsedItem] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (ref, reason)

    @property
    def delivered(self) -> int:
        return len(self.items) + len(self.quarantined)


def parse_file(kind: str, uri: str, data: bytes) -> Parsed:
    """Items of one delivered file of a pool of modality `kind` ('texts' or 'text', ...)."""
    modality = modality_of(kind)
    reason = unsupported(uri, modality)
    if reason is not None:
        return Parsed(quarantined=[(uri, reason)])
    if modality == "vectors":
        return parse_parquet(uri, data)
    if suffix(uri) == ".jsonl":
        return parse_jsonl(uri, data)
    if suffix(uri) == ".txt":
        try:
            text = decode_text(data)
        except TextRejected as exc:
            return Parsed(quarantined=[(uri, str(exc))])
        return Parsed([ParsedItem(sha256_hex(data), uri, len(data), uri, -1, "", text)])
    if not data:
        return Parsed(quarantined=[(uri, "empty file (0 bytes)")])
    return Parsed([ParsedItem(sha256_hex(data), uri, len(data), uri, -1)])


def parse_jsonl(uri: str, data: bytes) -> Parsed:
    """One item per non-blank line; a bad line is one quarantined item naming `file#L<n>`."""
    out = Parsed()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    for n, line in enumerate(data.split(b"\n")):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        ref = f"{uri}#L{n + 1}"
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.quarantined.append((ref, f"not UTF-8: {exc.reason} at byte {exc.start}"))
            continue
        try:
            record = json.loads(decoded)
        except (json.JSONDecodeError, RecursionError) as exc:
            out.quarantined.append((ref, f"invalid JSON line: {getattr(exc, 'msg', exc)}"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            out.quarantined.append((ref, "invalid JSONL record: needs a string 'text'"))
            continue
        text = record["text"]
        problem = text_problem(text)
        if problem is not None:
            out.quarantined.append((ref, problem))
            continue
        encoded = text.encode("utf-8")
        meta = json.dumps({"id": record.get("id")}, ensure_ascii=True, default=str)
        out.items.append(ParsedItem(sha256_hex(encoded), ref, len(encoded), uri, n, meta, text))
    return out


def vector_type_problem(type_) -> str | None:
    """Why an Arrow type cannot be a `vector` column (a list of numbers), or None."""
    import pyarrow as pa

    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_list(type_) for is_list in lists):
        return f"'vector' column must hold lists of numbers, not {type_}"
    value = type_.value_type
    if not (pa.types.is_floating(value) or pa.types.is_integer(value)):
        return f"'vector' column must hold lists of numbers, not lists of {value}"
    return None


def parse_parquet(uri: str, data: bytes) -> Parsed:
    """One item per row with an item_id and a vector; a file that cannot be read, lacks a column
    or has a `vector` column that is not a list of numbers is one quarantined item."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # any decoding error quarantines the file, not the drop
        return Parsed(quarantined=[(uri, f"unreadable parquet: {type(exc).__name__}: {exc}"[:500])])
    missing = {"item_id", "vector"} - set(table.column_names)
    if missing:
        return Parsed(quarantined=[(uri, f"parquet lacks column(s) {sorted(missing)}")])
    problem = vector_type_problem(table.schema.field("vector").type)
    if problem is not None:
        return Parsed(quarantined=[(uri, problem)])
    try:
        ids = table.column("item_id").cast(pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return Parsed(quarantined=[(uri, f"'item_id' column is not text: {exc}"[:500])])
    uris = table.column("uri").to_pylist() if "uri" in table.column_names else [None] * len(ids)
    # float32 in arrow, then one numpy block that the items view: Python floats for 100k x
    # 384 values held over 1 GB and took seconds to build (unsafe: an int beyond 2**24 rounds)
    try:
        vectors = table.column("vector").combine_chunks().cast(pa.list_(pa.float32()),
                                                               safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return Parsed(quarantined=[(uri, f"'vector' column is not float32: {exc}"[:500])])
    lengths = pc.list_value_length(vectors).to_pylist()  # None: a null vector
    flat = pc.list_flatten(vectors).to_numpy(zero_copy_only=False)  # a null value: NaN
    ends = np.cumsum([n or 0 for n in lengths], dtype=np.int64)  # null lists emit no values
    values = [None if n is None else flat[end - n:end]
              for n, end in zip(lengths, ends, strict=True)]
    extra = [c for c in table.column_names if c not in ("item_id", "vector", "uri")]
    metas = table.select(extra).to_pylist() if extra else [None] * len(ids)
    out = Parsed()
    for row, (item_id, given, length, meta, vector) in enumerate(
        zip(ids, uris, lengths, metas, values, strict=True)
    ):
        ref = str(given) if given else f"{uri}#row={row}"
        if not item_id or length is None:
            out.quarantined.append((ref, "missing item_id or vector"))
            continue
        text = json.dumps(meta, default=str) if meta else ""
        out.items.append(ParsedItem(item_id, ref, 4 * length, uri, row, text, vector=vector))
    return out
