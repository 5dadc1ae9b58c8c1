"""A pool's labels file: refused with the file, the line and the problem when it cannot be
trusted (not UTF-8, no header, conflicting labels, missing), label ids that match no item
explained (padded ids), on the real evaluation asset of a real pool."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import instance_for_test
from kit import Platform, materialized, meta, small_pool

from curation.labels import parse_labels_csv, unmatched_note


def test_parse_labels_csv_refuses_what_it_cannot_trust():
    assert parse_labels_csv("l.csv", b"item_id,label\na,cat\nb,dog\na,cat\nc,\n") == {
        "a": "cat", "b": "dog"}
    assert parse_labels_csv("l.csv", b'item_id , label\n" a",cat\n') == {" a": "cat"}
    cases = [
        (b"item_id,label\na,cat\nb,dog\na,dog\n",
         "labels file l.csv line 4: item 'a' is labelled 'dog' here and 'cat' on line 2"),
        (b"id,label\na,cat\n", "labels file l.csv: the header needs item_id and label"),
        (b"item_id,class\na,cat\n", "header needs item_id and label columns, got"),
        (b"item_id,label\n\xff,cat\n", "labels file l.csv: not UTF-8 (byte 14)"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_labels_csv("l.csv", data)


def test_padded_label_ids_are_explained():
    def pool_of(*ids):
        return lambda asked: np.isin(np.asarray(asked, dtype=object), list(ids))

    note = unmatched_note({" a": "x", "b ": "y", "zz": "z"}, pool_of("a", "b", "c"))
    assert note.startswith("3 ids of the labels file match no item")
    assert "2 of them only by leading or trailing spaces" in note
    assert unmatched_note({"a": "x"}, pool_of("a", "b")) == ""


@pytest.fixture(scope="module")
def filed(tmp_path_factory):
    pool = small_pool(name="filed", labels="labels.csv",
                      subsets=[{"name": "even", "target_size": 150, "seed": 1}])
    with instance_for_test() as instance:
        p = Platform(tmp_path_factory.mktemp("labels"), instance, pool)
        drops = [p.land(f"d{i}") for i in range(2)]
        for d in drops:
            p.ingest(d)
        p.refresh(drops)
        p.ids = p.table("raw").to_arrow()["item_id"].to_pylist()
        yield p


def _evaluate(p, data: bytes | None):
    path = p.landing / "filed" / "labels.csv"
    path.unlink(missing_ok=True)
    if data is not None:
        path.write_bytes(data)
    return p.run([["filed", "evaluation", "even"]])


def _failure(result) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(event.event_specific_data.error)


def test_a_missing_labels_file_fails_the_evaluation_naming_it(filed):
    result = _evaluate(filed, None)
    assert not result.success
    assert "labels.csv (pool 'filed', `labels:`) cannot be read" in _failure(result)


def test_conflicting_labels_fail_the_evaluation_naming_the_lines(filed):
    ids = filed.ids
    rows = [f"{i},x" for i in ids] + [f"{ids[0]},y"]
    result = _evaluate(filed, ("item_id,label\n" + "\n".join(rows) + "\n").encode())
    assert not result.success
    assert f"line {len(ids) + 2}: item {ids[0]!r} is labelled 'y' here and 'x' on line 2" in \
        _failure(result)


def test_padded_ids_leave_items_unlabelled_and_say_why(filed):
    ids = filed.ids
    rows = [f'" {i}",x' if n < 5 else f"{i},x" for n, i in enumerate(ids)]
    result = _evaluate(filed, ("item_id,label\n" + "\n".join(rows) + "\n").encode())
    assert result.success
    values = meta(materialized(result, ["filed", "evaluation", "even"])[0])
    assert values["labelled"] is False and values["unlabelled_items"] == 5
    assert "5 of them only by leading or trailing spaces" in values["labels_note"]
    assert values["label_figures"].startswith(f"absent: 5 of {len(ids)} items carry no label")


def test_a_labels_file_with_no_label_leaves_the_label_figures_absent(filed):
    """A labels file that holds its header only labels no item: the pool is evaluated on the
    figures that need no labels, and says the label figures are absent because it has none."""
    result = _evaluate(filed, b"item_id,label\n")
    assert result.success
    values = meta(materialized(result, ["filed", "evaluation", "even"])[0])
    assert values["labelled"] is False and values["unlabelled_items"] == len(filed.ids)
    assert values["label_figures"].startswith("absent: the pool has no labels")
    assert "labels" not in values["evaluation"]["curated"]
    assert {"coverage_p99_curated", "leaf_share_curated", "top_entropy_curated"} <= set(values)
    (check,) = result.get_asset_check_evaluations()
    assert "label figures absent: the pool has no labels" in check.description
