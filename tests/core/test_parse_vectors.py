"""Parquet vectors are read as one float32 block (never Python floats) and kept by raw as a
list<float32> column with exactly the delivered values, whatever the column's list or number
type; rows with no vector are quarantined, a null value becomes NaN (quarantined later)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.drops import _raw_rows
from curation.items import parse_file
from curation.store import schemas as store_module


def _parquet(vectors: pa.Array) -> bytes:
    sink = io.BytesIO()
    ids = [f"v-{i}" for i in range(len(vectors))]
    pq.write_table(pa.table({"item_id": ids, "vector": vectors, "label": list(range(len(ids)))}),
                   sink)
    return sink.getvalue()


@pytest.mark.parametrize("type_", [pa.list_(pa.float64()), pa.large_list(pa.float32()),
                                   pa.list_(pa.int64()), pa.list_(pa.float16())])
def test_every_list_type_gives_the_same_float32_values_in_raw(type_):
    values = [[1.0, -2.0, 3.0], [0.5, 4.0, 8.0], [16.0, 0.25, -1.0]]
    if pa.types.is_integer(type_.value_type):
        values = [[int(v) for v in row] for row in values]
    parsed = parse_file("vectors", "s3://b/d/part.parquet", _parquet(pa.array(values, type_)))
    assert not parsed.quarantined and len(parsed.items) == 3
    assert all(i.vector.dtype == np.float32 for i in parsed.items)
    table = _raw_rows("d", parsed.items)
    assert table.schema.field("values").type == pa.list_(pa.float32())
    expected = np.asarray(values, dtype=np.float32).tolist()
    assert table["values"].to_pylist() == expected
    assert [i.meta for i in parsed.items] == ['{"label": 0}', '{"label": 1}', '{"label": 2}']


def test_ragged_null_and_holed_vectors_keep_their_rows():
    column = pa.array([[1.0, 2.0], None, [3.0, None, 5.0], [], [6.0, 7.0]],
                      pa.list_(pa.float64()))
    parsed = parse_file("vectors", "f.parquet", _parquet(column))
    assert parsed.quarantined == [("f.parquet#row=1", "missing item_id or vector")]
    by_id = {i.item_id: i.vector for i in parsed.items}
    assert sorted(by_id) == ["v-0", "v-2", "v-3", "v-4"]
    assert by_id["v-0"].tolist() == [1.0, 2.0] and by_id["v-4"].tolist() == [6.0, 7.0]
    assert by_id["v-3"].tolist() == []
    assert by_id["v-2"][0] == 3.0 and np.isnan(by_id["v-2"][1]) and by_id["v-2"][2] == 5.0
    stored = _raw_rows("d", parsed.items)["values"].to_pylist()
    assert stored[0] == [1.0, 2.0] and stored[2] == [] and stored[3] == [6.0, 7.0]
    assert np.isnan(stored[1][1]) and [stored[1][0], stored[1][2]] == [3.0, 5.0]


def test_values_beyond_float32_become_infinite_not_an_error():
    column = pa.array([[1e300, 1.0], [2.0**40, 1.0]], pa.list_(pa.float64()))
    parsed = parse_file("vectors", "f.parquet", _parquet(column))
    assert [i.vector.tolist() for i in parsed.items] == [[np.inf, 1.0], [2.0**40, 1.0]]
    ints = pa.array([[2**62 + 1, 1]], pa.list_(pa.int64()))  # beyond float32's exact integers
    (item,) = parse_file("vectors", "f.parquet", _parquet(ints)).items
    assert item.vector.tolist() == [float(np.float32(2**62)), 1.0]


def test_texts_keep_no_values():
    table = _raw_rows("d", parse_file("texts", "a.txt", b"hello").items)
    assert table["values"].to_pylist() == [None]


def test_values_past_one_arrays_offsets_are_chunked_not_lost(monkeypatch):
    """A drop holding more values than int32 offsets address becomes a chunked column."""
    monkeypatch.setattr(store_module, "LIST_VALUES_MAX", 7)
    vectors = [np.arange(k, k + 3, dtype=np.float32) for k in range(6)]
    vectors[2] = None
    column = store_module.list_array(vectors)
    assert isinstance(column, pa.ChunkedArray) and column.num_chunks > 1
    assert all(len(pa.compute.list_flatten(c)) <= 7 for c in column.chunks)
    assert column.to_pylist() == [None if v is None else v.tolist() for v in vectors]
    table = store_module.rows("raw", {
        "item_id": [str(i) for i in range(6)], "drop": ["d"] * 6, "uri": ["u"] * 6,
        "size": [12] * 6, "source": ["s"] * 6, "row": list(range(6)), "meta": [""] * 6,
        "ingested_at": [""] * 6, "text": [None] * 6, "values": column})
    assert table["values"].to_pylist() == column.to_pylist()
