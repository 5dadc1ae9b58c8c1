"""Takedowns under hostile input: ids matched byte for byte (no trimming, lines split at \\n
only, `#` ids after the header), unknown pools refused, ids that match nothing named, hidden
takedown files reported, report snippets of JSONL records with Unicode line breaks. Real
LanceDB tables, a real Dagster instance, the takedowns sensor and `curate takedown`."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from kit import Platform, small_pool

from curation.cli import main
from curation.report import text_snippet
from curation.takedowns import parse_takedown_file, read_id_list, split_lines
from curation_dags.sensors import build_takedowns_sensor

# ids that a trimming or splitlines-based reader confuses with each other
TRICKY = ["a", " a", "b", "b\t", "u", "v", "u\u2028v", "w\x85z", "#42", "#reason: x", "c"]


@pytest.fixture
def pf(tmp_path):
    with dg.instance_for_test() as instance:
        p = Platform(tmp_path, instance, small_pool())
        p.land("d0", n=len(TRICKY), ids=TRICKY)
        p.ingest("d0")
        p.sensor = build_takedowns_sensor(p.pool, minimum_interval_seconds=30)
        p.cursor = None
        p.db = str(tmp_path / "lancedb")
        yield p


def raw_ids(p) -> set[str]:
    return set(p.table("raw").to_arrow()["item_id"].to_pylist())


def tick(p):
    with dg.build_sensor_context(instance=p.instance, cursor=p.cursor, resources={
            "landing": p.resources["landing"], "lancedb": p.lancedb}) as context:
        result = p.sensor(context)
    p.cursor = result.cursor
    return list(result.run_requests or [])


def apply(p, request):
    result = p.run([list(k.path) for k in request.asset_selection],
                   run_config=request.run_config or {}, tags=request.tags)
    assert result.success


def test_ingested_tricky_ids_are_stored_verbatim(pf):
    assert raw_ids(pf) == set(TRICKY)


def test_txt_file_matches_ids_byte_for_byte(pf):
    folder = pf.landing / pf.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    body = "# reason: privacy\n# a comment\n a\nb\t\nu\u2028v\r\n#42\n#reason: x\n\nw\x85z\n"
    (folder / "t1.txt").write_bytes(body.encode())
    assert parse_takedown_file("t1.txt", body.encode()) == [
        (i, "privacy") for i in (" a", "b\t", "u\u2028v", "#42", "#reason: x", "w\x85z")]
    (request,) = tick(pf)
    apply(pf, request)
    assert raw_ids(pf) == {"a", "b", "u", "v", "c"}  # exactly those, nothing else
    audit = pf.table("takedowns").to_arrow().to_pylist()
    assert {r["reason"] for r in audit} == {"privacy"}  # a mid-list '#reason:' is an id


def test_csv_file_quotes_any_id(pf):
    folder = pf.landing / pf.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    (folder / "t.csv").write_text('item_id,reason\n" a",dmca\n"#42",dmca\n', encoding="utf-8")
    (request,) = tick(pf)
    apply(pf, request)
    assert raw_ids(pf) == set(TRICKY) - {" a", "#42"}


def test_cli_matches_byte_for_byte_and_names_unmatched_ids(pf, tmp_path, capsys):
    items = tmp_path / "ids.txt"
    items.write_bytes(" a\nb\t\r\nu\u2028v\nnot-in-pool\n\n".encode())
    assert read_id_list(items) == [" a", "b\t", "u\u2028v", "not-in-pool"]
    capsys.readouterr()
    assert main(["takedown", "--pool", "tiny", "--items", str(items), "--reason", "legal",
                 "--lancedb", pf.db]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["requested"] == 4 and out["taken_down"] == 3
    assert out["unmatched"] == 1 and out["unmatched_ids"] == ["not-in-pool"]
    assert "'not-in-pool'" in captured.err
    (request,) = tick(pf)
    apply(pf, request)
    assert raw_ids(pf) == set(TRICKY) - {" a", "b\t", "u\u2028v"}


def test_cli_refuses_an_unknown_pool_and_names_the_known_ones(pf, tmp_path, capsys):
    items = tmp_path / "ids.txt"
    items.write_text("a\n")
    capsys.readouterr()
    assert main(["takedown", "--pool", "tinny", "--items", str(items), "--reason", "r",
                 "--lancedb", pf.db]) == 2
    err = capsys.readouterr().err
    assert "'tinny' is no known pool" in err and "tiny" in err.split("known pool", 1)[1]
    assert pf.table("takedowns") is None  # nothing recorded, no table for the typo
    from curation.store import Database, connect

    assert not [n for n in Database(connect(pf.db)).names() if n.startswith("tinny")]


def test_hidden_takedown_file_is_reported_once(pf, capfd):
    folder = pf.landing / pf.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    (folder / ".t1.txt").write_text("# reason: r\na\n")
    assert tick(pf) == []
    assert "'.t1.txt' not applied" in capfd.readouterr().err
    assert tick(pf) == []
    assert "'.t1.txt'" not in capfd.readouterr().err  # once
    (folder / ".t1.txt").rename(folder / "t1.txt")
    (request,) = tick(pf)
    apply(pf, request)
    assert "a" not in raw_ids(pf)


def test_lines_split_at_newline_only():
    assert split_lines("a\u2028b\r\nc\x85d\n\ne\r") == ["a\u2028b", "c\x85d", "", "e"]


def test_report_snippet_of_a_jsonl_record_with_unicode_line_breaks(tmp_path):
    records = [{"text": "first\u2028still first"}, {"text": "second\x85record"},
               {"text": "third"}]
    path = tmp_path / "t.jsonl"
    path.write_bytes(("\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False)
                                           for r in records) + "\n").encode())

    def read(uri):
        return path.read_bytes()

    assert text_snippet(f"{path}#L2", read) == "second record"
    assert text_snippet(f"{path}#L3", read) == "third"
    assert text_snippet(f"{path}#L1", read) == "first still first"


@pytest.fixture
def fitted(tmp_path):
    with dg.instance_for_test() as instance:
        p = Platform(tmp_path, instance, small_pool())
        drops = [p.land("d0"), p.land("d1")]
        for d in drops:
            p.ingest(d)
        p.refresh(drops, refit="force")
        p.sensor = build_takedowns_sensor(p.pool, minimum_interval_seconds=30)
        p.cursor = None
        yield p


def test_a_purge_killed_midway_is_finished_by_the_next_run_which_the_audit_names(
        fitted, monkeypatch):
    """The crash is simulated (a raise between two tables' deletes: a kill -9 cannot be timed
    between them); everything else is the real asset, sensor and tables."""
    from curation.store import PoolStore

    p = fitted
    victims = sorted(p.table("subset_even").to_arrow()["item_id"].to_pylist())[:3]
    folder = p.landing / p.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    (folder / "t.txt").write_text("# reason: privacy\n" + "\n".join(victims) + "\n")
    real = PoolStore.purge

    def crash_after_raw(store, ids, kinds):
        real(store, ids, kinds=("raw",))
        raise RuntimeError("simulated crash after the raw deletes")

    monkeypatch.setattr(PoolStore, "purge", crash_after_raw)
    (request,) = tick(p)
    failed = p.run([list(k.path) for k in request.asset_selection],
                   run_config=request.run_config, tags=request.tags)
    assert not failed.success
    audit = p.table("takedowns").to_arrow().to_pylist()
    assert {r["run"] for r in audit} == {""}  # not applied: still pending
    assert not set(victims) & set(p.table("raw").to_arrow()["item_id"].to_pylist())
    assert set(victims) <= set(p.table("embeddings").to_arrow()["item_id"].to_pylist())

    monkeypatch.setattr(PoolStore, "purge", real)
    (again,) = tick(p)  # pending rows: the sensor asks again
    finished = p.run([list(k.path) for k in again.asset_selection],
                     run_config=again.run_config or {}, tags=again.tags)
    assert finished.success
    for kind in ("raw", "embeddings", "assignments"):
        assert not set(victims) & set(p.table(kind).to_arrow()["item_id"].to_pylist()), kind
    audit = p.table("takedowns").to_arrow().to_pylist()
    assert {r["run"] for r in audit} == {finished.run_id}


def test_rows_a_running_takedowns_run_recorded_get_no_second_run_unless_it_dies(pf):
    """A file's run records the file's rows pending, purges, then stamps them. A tick while
    it runs sees them pending and must leave them to it; once it died unstamped, one run
    finishes them. The run in flight is a run record (a live run cannot be held between
    its record and its stamp); the sensor, the instance and the tables are real."""
    from dagster._core.test_utils import create_run_for_test

    from curation.takedowns import record_takedowns

    folder = pf.landing / pf.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    (folder / "t.txt").write_text("# reason: privacy\nc\n")
    (request,) = tick(pf)
    running = create_run_for_test(pf.instance, status=dg.DagsterRunStatus.STARTED,
                                  tags=request.tags,
                                  asset_selection=frozenset(request.asset_selection))
    record_takedowns(pf.lancedb.store(pf.pool.name), [("c", "privacy")], by="file:_takedowns/t.txt")
    assert tick(pf) == []  # pending, but the run in flight applies them
    assert tick(pf) == []
    pf.instance.report_run_failed(running)
    (again,) = tick(pf)  # it died before stamping: the pending rows get their run
    assert again.run_config in (None, {})
    apply(pf, again)
    assert "c" not in raw_ids(pf)
    assert {r["run"] for r in pf.table("takedowns").to_arrow().to_pylist()} != {""}
    assert tick(pf) == []


def test_a_subset_removed_from_the_config_is_purged_too(fitted):
    p = fitted
    victim = sorted(p.table("subset_core").to_arrow()["item_id"].to_pylist())[0]
    p.reconfigure(p.pool.model_copy(update={"subsets": p.pool.subsets[:1]}))  # core removed
    folder = p.landing / p.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    (folder / "t.txt").write_text(f"# reason: dmca\n{victim}\n")
    p.sensor = build_takedowns_sensor(p.pool, minimum_interval_seconds=30)
    (request,) = tick(p)
    result = p.run([list(k.path) for k in request.asset_selection],
                   run_config=request.run_config, tags=request.tags)
    assert result.success
    assert victim not in p.table("subset_core").to_arrow()["item_id"].to_pylist()
    (event,) = [e for e in result.get_asset_materialization_events()]
    values = event.event_specific_data.materialization.metadata
    assert values["retired_subsets_purged"].value == ["subset_core"]
    assert values["deleted_subset_core"].value == 1


def test_a_takedown_recorded_while_a_drop_is_ingested_still_removes_the_items(fitted):
    """The takedown lands between a drop's steps (raw written, embeddings not yet): the
    embeddings step drops the item again after its write, the assignments never hold it."""
    from curation.store import PoolStore
    from curation.takedowns import record_takedowns

    p = fitted
    p.instance.add_dynamic_partitions("tiny_drops", ["late"])
    p.land("late", 40)
    assert p.run([["tiny", "raw"]], partition_key="late").success
    victim = sorted(r for r in p.table("raw").to_arrow()["item_id"].to_pylist()
                    if r.startswith("late-"))[0]
    record_takedowns(PoolStore.open_uri(str(p.landing.parent / "lancedb"), "tiny"),
                     [(victim, "privacy")], by="cli:test")  # pending: no purge run yet
    result = p.run([["tiny", "embeddings"], ["tiny", "assignments"]], partition_key="late")
    assert result.success
    assert victim not in p.table("embeddings").to_arrow()["item_id"].to_pylist()
    assert victim not in p.table("assignments").to_arrow()["item_id"].to_pylist()
    meta = {e.event_specific_data.materialization.asset_key.path[-1]:
            e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["embeddings"]["taken_down_during_ingest"].value == 1


def test_a_takedown_recorded_while_raw_reads_the_drop_is_caught_after_its_write(
        fitted, monkeypatch):
    """raw's first look at the audit table is made to miss the takedown (simulating one
    recorded between that look and raw's write); its look after the write catches it."""
    from curation.store import PoolStore
    from curation.takedowns import record_takedowns

    p = fitted
    p.instance.add_dynamic_partitions("tiny_drops", ["late"])
    p.land("late", 40)
    record_takedowns(PoolStore.open_uri(str(p.landing.parent / "lancedb"), "tiny"),
                     [("late-3", "court order")], by="cli:test")
    real, calls = PoolStore.takedown_reasons, []

    def first_look_misses(store, ids):
        calls.append(1)
        return {} if len(calls) == 1 else real(store, ids)

    monkeypatch.setattr(PoolStore, "takedown_reasons", first_look_misses)
    result = p.run([["tiny", "raw"]], partition_key="late")
    assert result.success
    assert "late-3" not in p.table("raw").to_arrow()["item_id"].to_pylist()
    rows = p.table("quarantine").to_arrow().to_pylist()
    assert [r["reason"] for r in rows if r["item_id"] == "late-3"] == [
        "taken down: court order"]
    values = result.get_asset_materialization_events()[0].event_specific_data.materialization
    assert values.metadata["delivered"].value == 40 and values.metadata["ingested"].value == 39


def test_a_takedown_reaches_every_version_a_user_can_read(fitted, tmp_path, capsys):
    """A pinned subset version keeps serving nothing taken down: exports and the loader consult
    the audit table whatever version they open; the takedowns run then removes the older
    versions of raw, embeddings and assignments, and the subsets refresh those of the
    subsets."""
    from curation.loader import SubsetDataset
    from curation.store import PoolStore

    p = fitted
    db = str(tmp_path / "lancedb")
    pinned = p.table("subset_even").version
    victim = sorted(p.table("subset_even").to_arrow()["item_id"].to_pylist())[0]
    old_raw = p.table("raw").version
    items = tmp_path / "ids.txt"
    items.write_text(victim + "\n")
    assert main(["takedown", "--pool", "tiny", "--items", str(items), "--reason", "legal",
                 "--lancedb", db]) == 0
    capsys.readouterr()

    # recorded, nothing purged yet: the pinned version is still readable, without the item
    out = tmp_path / "pinned.jsonl"
    assert main(["subset", "export", "--pool", "tiny", "--subset", "even", "--version",
                 str(pinned), "--format", "jsonl", "--out", str(out), "--lancedb", db]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == pinned and answer["taken_down_excluded"] == 1
    assert victim not in out.read_text()
    dataset = SubsetDataset("tiny", "even", version=pinned, lancedb=db)
    assert victim not in dataset.item_ids and dataset.taken_down_excluded == 1

    # the purge: the item's rows, and every older version of the tables it touched, gone
    (request,) = tick(p)
    apply(p, request)
    for kind in ("raw", "embeddings", "assignments"):
        table = p.table(kind)
        assert [v["version"] for v in table.list_versions()] == [table.version], kind
        assert victim not in table.to_arrow()["item_id"].to_pylist(), kind
    with pytest.raises(ValueError, match="takedown removes every older version"):
        PoolStore.open_uri(db, "tiny").table("raw", old_raw)

    # the subsets' refresh after it: their older versions go too
    result = p.run([["tiny", "subsets", "even"], ["tiny", "subsets", "core"]])
    assert result.success
    for name in ("even", "core"):
        table = p.table(f"subset_{name}")
        assert [v["version"] for v in table.list_versions()] == [table.version], name
    capsys.readouterr()
    assert main(["subset", "export", "--pool", "tiny", "--subset", "even", "--version",
                 str(pinned), "--out", str(tmp_path / "gone.parquet"), "--lancedb", db]) == 2
    assert "takedown removes every older version" in capsys.readouterr().err


def test_the_same_text_in_another_container_is_refused_after_a_takedown(tmp_path):
    """A text taken down from a JSONL drop, delivered again as a .txt file (other bytes, so
    another id): raw refuses it by content, naming the original."""
    from curation.hashing import sha256_hex

    with dg.instance_for_test() as instance:
        p = Platform(tmp_path, instance, small_pool(name="notes", modality="texts", dim=None))
        texts = ["Keep this one.", "Remove this  sentence,\tplease.", "Keep that one."]
        folder = p.folder("j0")
        folder.mkdir(parents=True)
        (folder / "part.jsonl").write_text(
            "\n".join(json.dumps({"text": t}) for t in texts) + "\n", encoding="utf-8")
        (folder / "_SUCCESS").touch()
        p.instance.add_dynamic_partitions("notes_drops", ["j0"])
        assert p.run([["notes", "raw"]], partition_key="j0").success
        victim = sha256_hex(texts[1].encode())  # a JSONL line's id: its text's sha256
        assert victim in raw_ids(p)
        takedowns = p.landing / "notes" / "_takedowns"
        takedowns.mkdir(parents=True)
        (takedowns / "t.txt").write_text(f"# reason: privacy\n{victim}\n")
        p.sensor, p.cursor = build_takedowns_sensor(p.pool, minimum_interval_seconds=30), None
        (request,) = tick(p)
        result = p.run([list(k.path) for k in request.asset_selection],
                       run_config=request.run_config, tags=request.tags)
        assert result.success
        assert victim not in raw_ids(p)

        again = p.folder("t1")
        again.mkdir(parents=True)
        (again / "resent.txt").write_text("Remove this sentence, please.\n")  # other spaces
        (again / "other.txt").write_text("A new text.\n")
        (again / "_SUCCESS").touch()
        p.instance.add_dynamic_partitions("notes_drops", ["t1"])
        result = p.run([["notes", "raw"]], partition_key="t1")
        assert result.success
        reasons = {r["uri"].rsplit("/", 1)[-1]: r["reason"]
                   for r in p.table("quarantine").to_arrow().to_pylist()}
        assert reasons["resent.txt"] == f"taken down: privacy (same text as {victim})"
        assert "other.txt" not in reasons


def test_a_cli_takedown_lands_with_the_data_and_a_renamed_pool_applies_it(tmp_path, capsys,
                                                                           monkeypatch):
    """`curate takedown` on a configured pool lands the request under its landing prefix; the
    pool renamed over the same folder (new tables) re-ingests the drop and applies it."""
    with dg.instance_for_test() as instance:
        old = small_pool(name="before", landing_prefix="shared")
        p = Platform(tmp_path, instance, old)
        p.land("d0", 30)
        p.ingest("d0")
        pools = tmp_path / "pools.yaml"
        pools.write_text(json.dumps({"pools": [json.loads(old.model_dump_json())]}))
        monkeypatch.setenv("CURATION_POOLS", str(pools))
        monkeypatch.setenv("CURATION_LANDING", str(p.landing))
        items = tmp_path / "ids.txt"
        items.write_text("d0-3\nd0-4\n")
        capsys.readouterr()
        assert main(["takedown", "--pool", "before", "--items", str(items), "--reason", "gdpr",
                     "--by", "officer", "--lancedb", str(tmp_path / "lancedb")]) == 0
        answer = json.loads(capsys.readouterr().out)
        landed = answer["takedown_file"]
        assert "/shared/_takedowns/cli-officer-" in landed and landed.endswith(".csv")
        assert parse_takedown_file(landed, open(landed, "rb").read()) == [
            ("d0-3", "gdpr"), ("d0-4", "gdpr")]

        renamed = old.model_copy(update={"name": "after"})  # same landing folder
        p.reconfigure(renamed)
        p.ingest("d0")  # the new pool ingests the folder's drop again
        sensor = build_takedowns_sensor(renamed, minimum_interval_seconds=30)
        with dg.build_sensor_context(instance=p.instance, resources={
                "landing": p.resources["landing"], "lancedb": p.lancedb}) as context:
            (request,) = sensor(context).run_requests
        assert p.run([list(k.path) for k in request.asset_selection],
                     run_config=request.run_config, tags=request.tags).success
        ids = set(p.lancedb.open("after__raw").to_arrow()["item_id"].to_pylist())
        assert {"d0-3", "d0-4"}.isdisjoint(ids) and len(ids) == 28
        audit = p.lancedb.open("after__takedowns").to_arrow().to_pylist()
        assert {r["by"] for r in audit} == {f"file:_takedowns/{landed.rsplit('/', 1)[-1]}"}
