"""Every table's schema, declared once, and every migration of a table written by an older
version: the columns added since (`EMPTY_STRING_COLUMNS`) and the scalar indexes each
per-drop table carries (`INDEXED_COLUMNS`). Rows are built against the schema (`rows`), so
two writers cannot drift apart; arrays of vectors are built and read without a copy per row."""

from __future__ import annotations

from typing import Any

import numpy as np

# columns added to tables written before they existed, with '' (not null) for their old rows
EMPTY_STRING_COLUMNS = ("model_hash", "signature", "reason", "drift", "run")


# Scalar (BTREE) indexes of the per-drop tables: the key a drop's rows are upserted on and
# looked up by, and the column its scope filter reads, so that a drop's write and lookups
# read the index and the rows appended since, not the whole table
INDEXED_COLUMNS = {"raw": ("item_id", "drop"), "embeddings": ("item_id", "drop"),
                   "assignments": ("item_id", "drop"), "near_duplicates": ("item_id", "leaf")}


def schema(kind: str, dim: int = 0, n_levels: int = 0):
    """The pyarrow schema of a pool table kind (`subset_<name>` and `level_<l>` by prefix).
    `dim`: vector length (embeddings, levels); `n_levels`: tree depth (assignments, subsets)."""
    import pyarrow as pa

    s, i64, f32 = pa.string(), pa.int64(), pa.float32()
    if kind.startswith("subset_"):
        kind = "subset"
    elif kind.startswith("level_"):
        kind = "level"
    fields = {
        # what was delivered; `text` / `values` (a precomputed vector, not named `vector`:
        # LanceDB refuses NaN in a vector column, and raw keeps what was delivered) carry what
        # the embedder needs, so a drop's files are parsed once
        "raw": [("item_id", s), ("drop", s), ("uri", s), ("size", i64), ("source", s),
                ("row", i64), ("meta", s), ("ingested_at", s), ("text", s),
                ("values", pa.list_(f32))],
        "duplicates": [("key", s), ("item_id", s), ("drop", s), ("uri", s), ("first_drop", s)],
        "quarantine": [("key", s), ("drop", s), ("stage", s), ("item_id", s), ("uri", s),
                       ("reason", s)],
        "embeddings": [("item_id", s), ("drop", s), ("uri", s),
                       ("vector", pa.list_(f32, dim)), ("model", s), ("model_hash", s)],
        "fits": [("fit_version", i64), ("created_at", s), ("n_items", i64),
                 ("mean_distance", pa.float64()), ("drops", s), ("config", s), ("sizes", s),
                 ("report", s), ("tree", pa.large_binary()), ("model_hash", s),
                 ("signature", s), ("reason", s), ("drift", s)],
        "level": [("cluster_id", pa.int32()), ("parent", pa.int32()), ("size", i64),
                  ("n_children", pa.int32()), ("vector", pa.list_(f32, dim)),
                  ("fit_version", i64)],
        "assignments": [("item_id", s), ("drop", s), ("uri", s), ("distance", f32),
                        *((f"level_{lv + 1}", pa.int32()) for lv in range(n_levels)),
                        ("fit_version", i64), ("item_key", pa.uint64())],
        "assignment_log": [("key", s), ("drop", s), ("fit_version", i64), ("items", i64),
                           ("new_items", i64), ("new_distance_sum", pa.float64()),
                           ("mismatched_items", i64), ("other_model", s)],
        "subset": [("item_id", s), ("uri", s), ("weight", i64),
                   ("path", pa.list_(i64, n_levels)), ("leaf", i64), ("quota", i64),
                   ("rank", i64), ("leaf_size", i64), ("item_key", pa.uint64()),
                   ("fit_version", i64)],
        "takedowns": [("item_id", s), ("reason", s), ("at", s), ("by", s), ("run", s)],
        "takedown_content": [("item_id", s), ("content_key", s)],
        # semantic dedup (curation.dedup): one row per item of the current fit; a kept item
        # is its own representative (similarity 1); config_key = the fit and dedup settings
        # the row was computed under
        "near_duplicates": [("item_id", s), ("drop", s), ("leaf", pa.int32()),
                            ("item_key", pa.uint64()), ("representative", s),
                            ("representative_key", pa.uint64()), ("similarity", f32),
                            ("fit_version", i64), ("config_key", pa.uint64())],
    }
    return pa.schema(fields[kind])


def rows(kind: str, columns: dict, dim: int = 0, n_levels: int = 0):
    """A pyarrow Table of `kind`'s schema from {column: values} (lists, numpy or arrow)."""
    import pyarrow as pa

    target = schema(kind, dim, n_levels)
    return pa.table({f.name: _as_array(columns[f.name], f.type) for f in target}, schema=target)


def _as_array(values, type_):
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray | pa.Array):
        return values.cast(type_) if values.type != type_ else values
    if isinstance(values, np.ndarray) and pa.types.is_fixed_size_list(type_):
        return vector_array(values)
    return pa.array(values, type_)


LIST_VALUES_MAX = 2**31 - 1  # values one list<float32> array can hold (int32 offsets)


def list_array(vectors: list) -> Any:
    """Float32 arrays of any lengths (None for none) -> pyarrow list<float32>: one
    concatenation of the values and their offsets, not a conversion row by row; chunked past
    `LIST_VALUES_MAX` values (a drop of 5.6M x 384)."""
    import pyarrow as pa

    sizes = np.fromiter((0 if v is None else len(v) for v in vectors), np.int64, len(vectors))
    offsets = np.zeros(len(vectors) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] > LIST_VALUES_MAX and len(vectors) > 1:  # int32 offsets: chunks
        half = len(vectors) // 2
        parts = [list_array(vectors[:half]), list_array(vectors[half:])]
        return pa.chunked_array([c for part in parts for c in
                                 (part.chunks if isinstance(part, pa.ChunkedArray) else [part])])
    present = [v for v in vectors if v is not None]
    flat = (np.concatenate(present).astype(np.float32, copy=False) if present
            else np.zeros(0, np.float32))
    missing = np.fromiter((v is None for v in vectors), bool, len(vectors))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat),
                                    mask=pa.array(missing) if missing.any() else None)


def vector_array(vectors: np.ndarray):
    """(n, d) float32 -> pyarrow fixed_size_list<float32, d> (what LanceDB indexes as vectors)."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def vectors_of(column) -> np.ndarray:
    """pyarrow fixed_size_list column -> (n, d) float32 without copying per row."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.list_size
    flat = np.asarray(column.flatten(), dtype=np.float32)
    return flat.reshape(len(column), dim)


def table_dim(table) -> int | None:
    """Vector dimension of a table with a fixed_size_list `vector` column."""
    if table is None:
        return None
    return table.schema.field("vector").type.list_size


def canonical_order(item_ids) -> np.ndarray:
    """Row order by item id: fits and samples must not depend on storage order (a re-run drop
    rewrites its rows at the end of the table)."""
    import pyarrow.compute as pc

    return pc.sort_indices(item_ids).to_numpy()
