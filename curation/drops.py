"""What happens to one drop (pure core: no Dagster): ingest it, embed it, assign it.

The per-drop assets are wiring around these three functions; each returns an outcome (counts,
quarantined items, table versions) that the asset turns into materialisation metadata.

- `ingest_drop`: every delivered item ends in exactly one place, so the counts add up:
  ingested (`<pool>__raw`) + duplicates (`<pool>__duplicates`, already ingested by this or an
  earlier drop) + quarantined (`<pool>__quarantine`, stage "raw", with the reason) = delivered.
  An item taken down earlier is quarantined as "taken down: <reason>", never ingested again.
  The drop's files are read and parsed here, once (`curation.items`): raw keeps what the
  embedder needs (a text item's text, a precomputed vector's values) in its rows.
- `embed_drop`: one vector per raw row of the drop, from raw's rows (texts and vectors) or
  the image bytes at the item's uri; unusable rows go to the quarantine (stage "embeddings").
- `assign_drops`: the drops' vectors placed in the current tree, plus one assignment-log row
  per drop (what the refit sensor reads); each drop streamed in bounded batches.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .items import content_key, parse_file
from .sql import sql_str
from .store import (
    READER_RESERVE,
    FitRecord,
    PoolStore,
    count_in,
    list_array,
    rows,
    table_dim,
    vectors_of,
)

MAX_ITEM_ID_BYTES = 1024  # longer ids are quarantined (docs/LANDING.md)
# Largest vector norm ingested: squared distances between two such vectors stay below
# (2e15)^2 = 4e30, far inside float32 (3.4e38), in faiss's and the k-means' arithmetic.
MAX_VECTOR_NORM = 1e15
PROGRESS_EVERY_S = 5.0
# Rows of vectors an assignment reads at a time. Small on purpose: the LanceDB reader's
# allocator keeps freed batches for a while, so a run over many drops retains a multiple of
# one batch (measured, 1M x 384, 10 drops: peak 1,207 MiB at 65,536 rows, 451 MiB at 8,192,
# 333 MiB at 4,096, no slower).
ASSIGN_BATCH_ROWS = 4096
# Copies of one batch of vectors an assignment holds at its peak: the arrow batch, its numpy
# view's copy, the usable rows' copy and faiss' contiguous chunk (measured: docs/SCALE.md).
ASSIGN_COPIES = 4
# New trees an assignment run follows before it gives up (each one re-places its drops).
MAX_TREE_CHANGES = 3
ROW_BYTES = 200  # one assignment row without vectors (ids, uri, levels, key) in arrow


class DropRefused(ValueError):
    """The drop (or the pool's state) rules this step out; nothing was written."""


def reason_counts(quarantined) -> dict[str, int]:
    """Quarantined items per reason (the text before the first colon)."""
    return dict(Counter(reason.split(":")[0] for _, reason in quarantined))


# --- ingest ----------------------------------------------------------------------------------


@dataclass
class IngestOutcome:
    delivered: int
    ingested: int
    duplicates: int
    quarantined: list[tuple[str, str]]  # (ref, reason), taken-down items included
    retaken: int  # taken over from another drop whose embedding of them was quarantined
    taken_down: int
    files: int
    table_version: int
    pool_items: int

    def summary(self, drop: str) -> str:
        return (f"drop {drop}: delivered {self.delivered} = ingested {self.ingested} + "
                f"duplicates {self.duplicates} + quarantined {len(self.quarantined)}"
                + (f" ({self.retaken} taken over from quarantined embeddings)"
                   if self.retaken else ""))


def read_drop(storage, drop: str, modality: str):
    """(items, quarantined [(ref, reason)], files) of a complete drop: every file read and
    parsed once. `storage`: the pool's landing storage (list_files, read_bytes, ...)."""
    problem = storage.drop_problem(drop)
    if problem is not None:
        raise DropRefused(f"drop {drop!r} {problem}: nothing was read")
    if not storage.is_complete(drop):
        raise DropRefused(f"drop {drop!r} has no _SUCCESS marker: not complete yet")
    files = storage.list_files(drop)
    if not files:
        raise DropRefused(f"drop {drop!r} is empty: it holds no data files")
    items, quarantined = [], []
    for info in files:
        if info.problem is not None:
            quarantined.append((info.uri, info.problem))
            continue
        try:
            data = storage.read_bytes(info.uri)
        except OSError as exc:
            quarantined.append((info.uri, f"unreadable: {exc}"))
            continue
        parsed = parse_file(modality, info.uri, data)
        items += parsed.items
        quarantined += parsed.quarantined
    return items, quarantined, files


def _taken_down(store: PoolStore, items) -> dict[str, str]:
    """{item_id: reason} of the items taken down earlier: by id, or (texts) the same text
    under another id (another container: a .txt for a JSONL line)."""
    gone = store.takedown_reasons({i.item_id for i in items})
    contents = store.taken_down_contents()
    keys = {i.item_id: content_key(i.text) for i in items
            if contents and i.text is not None and i.item_id not in gone}
    same_text = {item: contents[key] for item, key in keys.items() if key in contents}
    if same_text:
        reasons = store.takedown_reasons(same_text.values())
        gone.update({item: f"{reasons.get(orig, 'taken down')} (same text as {orig})"
                     for item, orig in same_text.items()})
    return gone


def _raw_rows(drop: str, items):
    now = datetime.now(UTC).isoformat()
    return rows("raw", {
        "item_id": [i.item_id for i in items], "drop": [drop] * len(items),
        "uri": [i.ref for i in items], "size": [i.size for i in items],
        "source": [i.source for i in items], "row": [i.row for i in items],
        "meta": [i.meta for i in items], "ingested_at": [now] * len(items),
        "text": [i.text for i in items], "values": list_array([i.vector for i in items]),
    })


def ingest_drop(store: PoolStore, storage, drop: str, modality: str) -> IngestOutcome:
    """Read the drop once and write raw, duplicates and the raw-stage quarantine.

    The write is insert-if-absent (`PoolStore.claim_raw`); ingested vs duplicate is read back
    from the table after the commit, so two drops sharing items never both ingest them. An
    item an earlier drop delivered but whose embedding was quarantined is taken over."""
    items, quarantined, files = read_drop(storage, drop, modality)
    delivered = len(items) + len(quarantined)
    # An id is a key in every table and every query: a cap keeps one item from bloating
    # them (content-addressed ids are 64 characters).
    id_bytes = {i.item_id: len(i.item_id.encode("utf-8")) for i in items}
    quarantined += [(i.ref, f"item id of {id_bytes[i.item_id]} bytes exceeds the "
                     f"{MAX_ITEM_ID_BYTES}-byte cap") for i in items
                    if id_bytes[i.item_id] > MAX_ITEM_ID_BYTES]
    items = [i for i in items if id_bytes[i.item_id] <= MAX_ITEM_ID_BYTES]

    gone = _taken_down(store, items)
    down = [(i, gone[i.item_id]) for i in items if i.item_id in gone]
    items = [i for i in items if i.item_id not in gone]

    # Repeated inside this drop: the first wins, the others are duplicates of this drop.
    first: dict[str, Any] = {}
    repeated = [i for i in items if first.setdefault(i.item_id, i) is not i]
    fresh = list(first.values())

    # Held by another drop whose embedding of it was quarantined: this drop takes it over.
    held = store.raw_holders(first, drop)
    retaken = store.reclaimable(held)
    store.release_raw({i: held[i] for i in retaken})

    table, holders = store.claim_raw(drop, _raw_rows(drop, fresh))
    ingested = [i for i in fresh if holders.get(i.item_id) == drop]
    # Taken down while this drop was read (after the check above): out again, quarantined.
    late = set(store.drop_taken_down_rows("raw", f"drop = {sql_str(drop)}",
                                          [i.item_id for i in ingested]))
    if late:
        reasons = store.takedown_reasons(late)
        down += [(i, reasons[i.item_id]) for i in ingested if i.item_id in late]
        ingested = [i for i in ingested if i.item_id not in late]
    duplicates = [(i.item_id, i.ref, drop) for i in repeated]
    duplicates += [(i.item_id, i.ref, holders.get(i.item_id, "")) for i in fresh
                   if holders.get(i.item_id) != drop]
    store.write_duplicates(drop, duplicates)
    down_rows = [(i.ref, f"taken down: {reason}") for i, reason in down]
    store.write_quarantine(drop, "raw", quarantined + down_rows,
                           ids=[""] * len(quarantined) + [i.item_id for i, _ in down])
    quarantined += down_rows
    assert len(ingested) + len(duplicates) + len(quarantined) == delivered
    return IngestOutcome(delivered, len(ingested), len(duplicates), quarantined, len(retaken),
                         len(down), len(files), table.version, table.count_rows())


# --- embed -----------------------------------------------------------------------------------


@dataclass
class EmbedOutcome:
    raw_items: int
    embedded: int
    taken_down_during_ingest: int
    quarantined: list[tuple[str, str]]
    dim: int
    identity: dict
    model_hash: str
    items_per_s: float | None
    table: Any  # the embeddings table after the write (None before any vector)


def _stored_vectors(raw_rows, dim_hint: int | None, read_bytes):
    """(row indices with a vector, (n, d) float32, reasons, dim) of a vectors pool's raw rows:
    the values raw kept, taken as one arrow column (never Python floats: 100k x 384 of them
    held 1.2 GB); a row ingested before raw kept them is read from its file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = raw_rows.num_rows
    stored = (raw_rows["values"].combine_chunks() if "values" in raw_rows.column_names
              else pa.nulls(n, pa.list_(pa.float32())))
    lengths = np.array(pc.fill_null(pc.list_value_length(stored), -1), dtype=np.int64)
    reasons = [""] * n
    missing = np.flatnonzero(lengths < 0).tolist()
    from_files: dict[int, np.ndarray] = {}  # rows ingested before raw kept the values
    by_ref = {raw_rows["uri"][i].as_py(): i for i in missing}
    for source in sorted({raw_rows["source"][i].as_py() for i in missing}):
        try:
            parsed = parse_file("vectors", source, read_bytes(source))
        except OSError as exc:
            parsed, reason = None, f"vector unreadable: {type(exc).__name__}"
            for i in missing:
                if raw_rows["source"][i].as_py() == source:
                    reasons[i] = reason
        for item in parsed.items if parsed else ():
            if item.ref in by_ref:
                from_files[by_ref[item.ref]] = np.asarray(item.vector, dtype=np.float32)
    for i in missing:
        if i in from_files:
            lengths[i] = len(from_files[i])
        elif not reasons[i]:
            reasons[i] = "vector unreadable: no longer in its file"
    readable = np.array([not r for r in reasons], dtype=bool)
    counts = Counter(lengths[readable].tolist())
    dim = dim_hint or (counts.most_common(1)[0][0] if counts else None)
    for i in np.flatnonzero(readable & (lengths != dim)).tolist():
        reasons[i] = f"wrong dimension: {int(lengths[i])} values, the pool has {dim}"
    got = np.flatnonzero(readable & (lengths == dim))
    x = np.empty((len(got), dim or 0), dtype=np.float32)
    in_table = lengths[got] >= 0
    in_table &= ~np.isin(got, list(from_files))
    if in_table.any():
        taken = stored.take(pa.array(got[in_table]))
        x[in_table] = pc.list_flatten(taken).to_numpy(zero_copy_only=False).astype(
            np.float32, copy=False).reshape(-1, dim)
    for k in np.flatnonzero(~in_table).tolist():
        x[k] = from_files[int(got[k])]
    return got.tolist(), x, reasons, dim


def _embedder_items(raw_rows, modality: str, read_bytes):
    """The embedder's Items of raw's rows, refs as raw recorded them: texts from raw's `text`
    column (parsed once, by raw); an image, or a row ingested before raw kept its text, is
    read from its uri (a text row of that kind through the same parser, curation.items)."""
    from .embedding.base import Item

    texts = (raw_rows["text"].to_pylist() if "text" in raw_rows.column_names
             else [None] * raw_rows.num_rows)
    legacy: dict[str, set[str]] = {}
    for uri, source, text in zip(raw_rows["uri"].to_pylist(), raw_rows["source"].to_pylist(),
                                 texts, strict=True):
        if text is not None:
            yield Item(ref=uri, text=text)
        elif uri == source:  # a whole file: the embedder reads (and decodes) it
            yield Item(ref=source, reader=read_bytes)
        else:
            legacy.setdefault(source, set()).add(uri)
    for source, refs in legacy.items():
        try:
            parsed = parse_file(modality, source, read_bytes(source))
        except OSError as exc:
            for ref in sorted(refs):
                yield Item(ref=ref, error=f"unreadable: {type(exc).__name__}: {exc}")
            continue
        yield from (Item(ref=p.ref, text=p.text) for p in parsed.items if p.ref in refs)


def _embed_stream(embedder, items, ids: list[str], uris: list[str], verify: list[bool], log):
    """Stream items through the embedder, one batch in memory at a time.

    Returns (raw row indices embedded, their (n, d) vectors, a reason per raw row ("" when
    embedded), the embedder's identity, items/s). An item read from storage whose bytes no
    longer hash to raw's item id (`verify`: the file changed since raw) is quarantined."""
    by_ref = {uri: i for i, uri in enumerate(uris)}
    total = len(ids)
    last_log = [0.0]

    def progress(p) -> None:
        if p.elapsed_s - last_log[0] >= PROGRESS_EVERY_S or p.done >= total:
            last_log[0] = p.elapsed_s
            log(f"embedded {p.embedded} + quarantined {p.quarantined} of ~{total} items "
                f"in {p.elapsed_s:.1f} s ({p.items_per_s:.0f} items/s)")

    identity = embedder.identity()  # loads the model once, before the stream
    reasons, done = [""] * total, [False] * total
    got: list[int] = []
    parts: list[np.ndarray] = []
    started, handled = time.perf_counter(), 0
    for batch in embedder.embed_batches(items, progress=progress):
        handled += len(batch.item_ids) + len(batch.quarantined)
        for ref, reason in batch.quarantined:
            i = by_ref.get(ref)
            if i is not None and not done[i]:
                reasons[i], done[i] = reason, True
        picked = []
        for k, (ref, item_id) in enumerate(zip(batch.refs, batch.item_ids, strict=True)):
            i = by_ref.get(ref)
            if i is None or done[i]:
                continue
            done[i] = True
            if verify[i] and item_id != ids[i]:
                reasons[i] = "changed since raw: its bytes no longer match the item id"
                continue
            got.append(i)
            picked.append(k)
        if picked:
            parts.append(np.asarray(batch.vectors, dtype=np.float32)[picked])
    seconds = time.perf_counter() - started
    for i in range(total):
        if not done[i]:
            reasons[i] = "not embedded: the embedder returned no vector for this item"
    x = np.concatenate(parts) if parts else np.zeros((0, int(identity.get("dim") or 0)),
                                                      np.float32)
    order = np.argsort(np.asarray(got, dtype=np.int64), kind="stable")
    return [got[j] for j in order], x[order], reasons, identity, handled / max(seconds, 1e-9)


def _unusable(x: np.ndarray, got: list[int], reasons: list[str]) -> np.ndarray:
    """Mask of usable rows of x (finite, norm within MAX_VECTOR_NORM); reasons filled in."""
    if not len(got):
        return np.ones(0, bool)
    rows_of = np.asarray(got, dtype=np.int64)
    finite = np.isfinite(x).all(axis=1)
    for i in rows_of[~finite]:
        reasons[i] = "vector holds NaN or Inf"
    # float64 sums without an (n, d) float64 copy (300 MB at 100k x 384)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    huge = finite & (norms > MAX_VECTOR_NORM)
    for i, n in zip(rows_of[huge], norms[huge], strict=True):
        reasons[i] = (f"vector norm {n:.3g} exceeds {MAX_VECTOR_NORM:.0e}: squared "
                      "distances would overflow float32 in the k-means")
    return finite & ~huge


def embed_drop(store: PoolStore, drop: str, modality: str, pool_dim: int | None,
               identity_of_vectors: dict | None = None, embedder=None, read_bytes=None,
               log: Callable[[str], None] = print) -> EmbedOutcome:
    """One vector per raw row of the drop, written in one commit (re-runs never duplicate).

    A vectors pool takes the values raw kept (`identity_of_vectors` names their producer);
    texts and images stream through `embedder` (`identity()`, `embed_batches`), images read
    by `read_bytes(uri)`."""
    from .embedding.base import identity_version

    raw = store.raw_rows(drop, ["item_id", "uri", "source", "text", "values"])
    if raw is None:
        raise DropRefused(f"no raw table for pool {store.pool_name}: materialise raw first")
    ids, uris = raw["item_id"].to_pylist(), raw["uri"].to_pylist()
    existing = store.table("embeddings")
    stored_dim = table_dim(existing)
    if pool_dim and stored_dim and pool_dim != stored_dim:
        raise DropRefused(
            f"drop {drop!r}: the pool's dim is {pool_dim} but its embeddings table holds "
            f"{stored_dim}-d vectors. A new dimension is a new embedding space, which "
            "this pool's tree and subsets cannot mix with the old one: set dim back to "
            f"{stored_dim}, or deliver the new vectors to a new pool (docs/LANDING.md)")
    rate = None
    if modality == "vectors":
        identity = dict(identity_of_vectors or {})
        got, x, reasons, dim = _stored_vectors(raw, pool_dim or stored_dim, read_bytes)
    else:
        texts = (raw["text"].to_pylist() if "text" in raw.column_names
                 else [None] * raw.num_rows)
        verify = [t is None for t in texts]  # read from storage: may have changed since raw
        got, x, reasons, identity, rate = _embed_stream(
            embedder, _embedder_items(raw, modality, read_bytes), ids, uris, verify, log)
        dim = pool_dim or stored_dim or (x.shape[1] if len(got) else None)
        if len(got) and x.shape[1] != dim:
            for i in got:
                reasons[i] = f"wrong dimension: the model gives {x.shape[1]}, the pool has {dim}"
            got, x = [], x[:0]

    usable = _unusable(x, got, reasons)
    keep = [i for i, ok in zip(got, usable, strict=True) if ok]
    x = x[usable]
    quarantined = [(uris[i], reasons[i]) for i in range(len(ids)) if reasons[i]]
    store.write_quarantine(drop, "embeddings", quarantined,
                           ids=[ids[i] for i in range(len(ids)) if reasons[i]])
    model_hash = identity_version(identity)
    table, late = existing, []
    if dim:
        data = rows("embeddings", {
            "item_id": [ids[i] for i in keep], "drop": [drop] * len(keep),
            "uri": [uris[i] for i in keep], "vector": x.reshape(len(keep), dim),
            "model": [identity.get("name") or identity.get("model", "")] * len(keep),
            "model_hash": [model_hash] * len(keep),
        }, dim=dim)
        # a delete and an append, as for assignments: a merge_insert's join reads the whole
        # table (6 GiB at 3M x 384, measured), this only holds the drop's rows
        table = store.rewrite_drop("embeddings", drop, data)
        # taken down while this drop was embedded: its rows go again
        late = store.drop_taken_down_rows("embeddings", f"drop = {sql_str(drop)}",
                                          [ids[i] for i in keep])
    return EmbedOutcome(len(ids), len(keep) - len(late), len(late), quarantined, dim or 0,
                        identity, model_hash, rate, table)


@dataclass(frozen=True)
class StoredCheck:
    """What downstream will read of one drop's embeddings (the asset's blocking checks)."""

    dim: int
    non_finite_rows: int
    duplicate_ids: int
    in_other_drops: int


def check_stored_embeddings(table, drop: str) -> StoredCheck:
    """Read back this drop's stored rows and count what would break downstream."""
    stored = table.search().where(f"drop = {sql_str(drop)}").select(["item_id", "vector"])
    stored = stored.limit(None).to_arrow()
    dim = table_dim(table)
    x = vectors_of(stored["vector"]) if stored.num_rows else np.zeros((0, dim), np.float32)
    ids = stored["item_id"].to_pylist()
    elsewhere = count_in(table, "item_id", ids, f"drop != {sql_str(drop)}")
    n_bad = int((~np.isfinite(x).all(axis=1)).sum())
    return StoredCheck(int(x.shape[1]), n_bad, len(ids) - len(set(ids)) + elsewhere, elsewhere)


# --- assign ----------------------------------------------------------------------------------


@dataclass
class AssignOutcome:
    fit: FitRecord
    items: int
    new_since_fit: int
    other_model_items: int
    taken_down_during_ingest: int
    mean_distance: float
    per_drop: dict = field(default_factory=dict)
    table_version: int = 0

    @property
    def distance_ratio_to_fit(self) -> float:
        if not self.items:
            return 0.0
        return self.mean_distance / max(self.fit.mean_distance, 1e-12)


def assign_drops(store: PoolStore, drops: list[str], assign,
                 batch_rows: int = ASSIGN_BATCH_ROWS) -> AssignOutcome:
    """Place the drops' vectors in the pool's current tree (`assign(hierarchy, x)` ->
    Assignment) and rewrite their assignment rows (drop by drop) and log rows (one
    commit). Each drop is streamed `batch_rows` vectors at a time, so a run over every drop
    (the re-assignment after a refit) holds one batch of vectors, never a drop's or the
    pool's: memory `assign_memory_bound`.

    A fit that commits while this runs (runs of one pool may overlap) is caught: after each
    drop's commit the latest fit version is read again, and when a newer tree is there every
    drop of the run is placed again in it. So when this returns, the rows of every drop were
    written after the latest fit it could see, and the log rows are that fit's."""
    fit = store.load_fit()
    if fit is None:
        raise DropRefused(f"pool {store.pool_name} has no fitted tree yet: run level_1")
    if store.table("embeddings") is None:
        raise DropRefused(f"pool {store.pool_name} has no embeddings table")
    tallies: dict[str, _DropTally] = {}
    for _ in range(MAX_TREE_CHANGES + 1):
        for drop in drops:
            tallies[drop] = _assign_drop(store, drop, fit, assign, batch_rows)
            if store.latest_fit_version() != fit.fit_version:
                break  # a new tree: the drops written so far are on the old one
        else:
            break
        fit = store.load_fit()
    else:
        raise DropRefused(f"pool {store.pool_name}: the tree changed {MAX_TREE_CHANGES + 1} "
                          f"times while drops {drops} were assigned; run them again")
    ordered = [tallies[d] for d in drops]
    log, totals = _log_rows(fit, drops, ordered)
    store.write_assignment_log(fit.fit_version, drops, log)
    assigned = sum(t.assigned for t in ordered)
    table = store.table("assignments")
    return AssignOutcome(fit, assigned, totals["new"], sum(t.items - t.assigned for t in ordered),
                         sum(t.late for t in ordered),
                         sum(t.distance_sum for t in ordered) / assigned if assigned else 0.0,
                         totals["per_drop"], table.version if table is not None else 0)


@dataclass
class _DropTally:
    """What one drop's assignment found: what its log row and the outcome need."""

    items: int = 0
    assigned: int = 0
    distance_sum: float = 0.0
    late: int = 0
    other_models: set = field(default_factory=set)


def _assign_drop(store: PoolStore, drop: str, fit: FitRecord, assign,
                 batch_rows: int) -> _DropTally:
    """One drop's vectors, batch by batch, placed in the tree; then its assignment rows
    rewritten (`PoolStore.rewrite_drop`: memory of this drop's rows, not of the table)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tally = _DropTally()
    parts = []
    scope = f"drop = {sql_str(drop)}"
    for cols, x in store.vector_batches("embeddings", scope,
                                        ("item_id", "drop", "uri", "model_hash"), batch_rows):
        tally.items += len(x)
        usable = np.ones(len(x), dtype=bool)
        if fit.model_hash:  # vectors of another model live in another space: never assign them
            hashes = cols["model_hash"].to_numpy(zero_copy_only=False)
            usable = hashes == fit.model_hash
            tally.other_models.update(np.unique(hashes[~usable]).tolist())
        if not usable.any():
            continue
        assignment = assign(fit.hierarchy, x[usable])
        del x
        tally.assigned += int(usable.sum())
        tally.distance_sum += float(assignment.distance.sum(dtype=np.float64))
        keep = pa.array(usable)
        parts.append(assignment_rows(*(pc.filter(cols[c], keep)
                                       for c in ("item_id", "drop", "uri")),
                                     assignment, fit.fit_version))
    if parts:
        data = pa.concat_tables(parts)
        # a delete and an append: a merge_insert's join would hold the whole table's keys
        store.rewrite_drop("assignments", drop, data)
        # taken down while this drop was assigned: their rows go again
        tally.late = len(store.drop_taken_down_rows("assignments", scope,
                                                    data["item_id"].to_pylist()))
    elif (table := store.table("assignments")) is not None:
        table.delete(scope)
    return tally


def assign_memory_bound(k: int, dim: int, drop_items: int = 0,
                        batch_rows: int = ASSIGN_BATCH_ROWS) -> dict:
    """The assignment run's memory bound, a function of the config (docs/SCALE.md): one
    batch of vectors in its copies (arrow, numpy, faiss' input), the leaf centroids, the
    assignment rows of the largest drop (no vectors: about ROW_BYTES per item) and the
    reader's reserve."""
    return {
        "formula": f"{ASSIGN_COPIES} x batch x d x 4 B + k x d x 4 B + drop items x {ROW_BYTES} B "
                   "+ reader reserve",
        "batch": batch_rows, "dim": dim, "k": k, "drop_items": drop_items,
        "reader_reserve_mib": READER_RESERVE >> 20,
        "bytes": (ASSIGN_COPIES * batch_rows * dim * 4 + k * dim * 4 + drop_items * ROW_BYTES
                  + READER_RESERVE),
    }


def assignment_rows(item_id, drop, uri, assignment, fit_version: int):
    """Rows of `<pool>__assignments`: where each item sits in the current tree."""
    from .selection import item_keys

    n_levels = assignment.paths.shape[1]
    columns = {"item_id": item_id, "drop": drop, "uri": uri,
               "distance": assignment.distance.astype(np.float32),
               "fit_version": np.full(len(assignment.distance), fit_version, np.int64),
               # the 64-bit key that subsets rank by (computed once per item here)
               "item_key": item_keys(item_id)}
    for level in range(n_levels):
        columns[f"level_{level + 1}"] = assignment.paths[:, level].astype(np.int32)
    return rows("assignments", columns, n_levels=n_levels)


def _log_rows(fit: FitRecord, drops: list[str], tallies: list[_DropTally]):
    """One `<pool>__assignment_log` row per drop of this run, for the current fit."""
    out: dict[str, list] = {k: [] for k in ("key", "drop", "fit_version", "items", "new_items",
                                            "new_distance_sum", "mismatched_items",
                                            "other_model")}
    per_drop = {}
    for drop, tally in zip(drops, tallies, strict=True):
        # a drop is new to the fit unless the fit saw exactly this many of its items
        new = fit.drops.get(drop) != tally.items
        out["key"].append(f"{fit.fit_version}|{drop}")
        out["drop"].append(drop)
        out["fit_version"].append(fit.fit_version)
        out["items"].append(tally.items)
        out["new_items"].append(tally.assigned if new else 0)
        out["new_distance_sum"].append(tally.distance_sum if new else 0.0)
        out["mismatched_items"].append(tally.items - tally.assigned)
        out["other_model"].append(",".join(sorted(tally.other_models)))
        per_drop[drop] = {"items": tally.items, "new": bool(new)}
    return rows("assignment_log", out), {"new": int(np.sum(out["new_items"])),
                                         "per_drop": per_drop}
