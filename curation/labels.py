"""A pool's labels file (`labels:` in the pool config): a CSV with `item_id` and `label` columns,
read for the evaluation's label figures. Ids match byte for byte, as everywhere (nothing is
trimmed). A file that cannot be trusted is refused with the file, the line and the problem:
not UTF-8, no `item_id`/`label` header, an item labelled twice with different labels."""

from __future__ import annotations

import csv
import io


def parse_labels_csv(name: str, data: bytes) -> dict[str, str]:
    """{item_id: label} of a labels file, or ValueError naming `name`, the line, the problem.
    Rows without a label are skipped; the same label twice for an item is accepted."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"labels file {name}: not UTF-8 (byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [f.strip() for f in reader.fieldnames or []]
    if "item_id" not in fields or "label" not in fields:
        raise ValueError(f"labels file {name}: the header needs item_id and label columns, "
                         f"got {fields}")
    reader.fieldnames = fields
    labels: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for row in reader:
        item, label = row.get("item_id") or "", row.get("label")
        if not item or label in (None, ""):
            continue
        line = reader.line_num
        if item in labels and labels[item] != label:
            raise ValueError(f"labels file {name} line {line}: item {item!r} is labelled "
                             f"{label!r} here and {labels[item]!r} on line {line_of[item]}")
        labels[item], line_of[item] = label, line
    return labels


def unmatched_note(labels: dict[str, str], is_item) -> str:
    """Why labelled items are missing, when label ids match no item: e.g. padded ids.
    `is_item(ids)`: a boolean per id, whether the pool holds it."""
    ids = list(labels)
    stray = [i for i, known in zip(ids, is_item(ids), strict=True) if not known]
    if not stray:
        return ""
    trimmed = [i.strip() for i in stray]
    padded = [i for i, t, known in zip(stray, trimmed, is_item(trimmed), strict=True)
              if i != t and known]
    note = f"{len(stray)} ids of the labels file match no item of the pool (e.g. {stray[0]!r})"
    if padded:
        note += (f"; {len(padded)} of them only by leading or trailing spaces (ids match byte "
                 "for byte)")
    return note
