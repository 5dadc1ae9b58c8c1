"""LandingStorage on a real local folder and on a real S3 server (moto, server mode, loopback)."""

from __future__ import annotations

import pytest

from curation.landing import validate_drop_id
from resources.storage import split_s3_url


# ---- drop ids ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("drop_id", "problem"),
    [
        ("", "empty"),
        ("..", ".."),
        ("a..b", ".."),
        ("a/b", "'/'"),
        ("a\\b", "'\\'"),
        (".staging", "starts with '.'"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\x7fb", "control character"),
        ("x" * 129, "too long"),
        ("a,b", "','"),
        (" a", "whitespace"),
    ],
)
def test_validate_drop_id_rejects_and_names_the_id(drop_id, problem):
    with pytest.raises(ValueError) as info:
        validate_drop_id(drop_id)
    message = str(info.value)
    assert repr(drop_id) in message
    assert problem in message


@pytest.mark.parametrize("drop_id", ["2024-06-01", "drop_001", "x" * 128, "a.b", "batch-7.v2"])
def test_validate_drop_id_accepts(drop_id):
    assert validate_drop_id(drop_id) == drop_id


def test_split_s3_url():
    assert split_s3_url("s3://b/a/b/") == ("b", "a/b")
    assert split_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError, match="bucket"):
        split_s3_url("s3:///x")


# ---- listing and reading, local and S3 ---------------------------------------------------------
def test_list_drops_complete_incomplete_and_invalid(landing):
    landing.put("d1/a.bin", b"aaa")
    landing.put("d1/sub/b.bin", b"bbbbb")
    landing.put("d1/.DS_Store", b"junk")
    landing.put("d1/_SUCCESS")
    landing.put("d2/c.bin", b"c")  # no _SUCCESS yet
    landing.put("bad..name/x.bin", b"x")
    landing.put(".staging/y.bin", b"y")

    drops = {d.drop_id: d for d in landing.storage.list_drops()}
    assert sorted(drops) == ["d1", "d2"]
    assert drops["d1"].complete and not drops["d2"].complete
    assert drops["d1"].n_files == 2 and drops["d2"].n_files == 1
    assert drops["d1"].last_modified is not None and drops["d1"].last_modified.tzinfo
    invalid = landing.storage.invalid_drop_ids()
    assert set(invalid) == {"bad..name", ".staging"}
    assert ".." in invalid["bad..name"]

    assert landing.storage.is_complete("d1") and not landing.storage.is_complete("d2")
    landing.put("d2/_SUCCESS")
    assert landing.storage.is_complete("d2")


def test_list_files_and_read_bytes(landing):
    landing.put("d1/b.bin", b"bbbbb")
    landing.put("d1/a.bin", b"aaa")
    landing.put("d1/sub/c.bin", b"cc")
    landing.put("d1/_SUCCESS")

    files = landing.storage.list_files("d1")
    assert [(f.name, f.size) for f in files] == [("a.bin", 3), ("b.bin", 5), ("sub/c.bin", 2)]
    assert [landing.storage.read_bytes(f.uri) for f in files] == [b"aaa", b"bbbbb", b"cc"]
    drop_url = landing.storage.drop_url("d1")
    assert all(f.uri.startswith(drop_url + "/") for f in files)
    if landing.storage.is_s3:
        assert drop_url.endswith("/incoming/d1") and drop_url.startswith("s3://")
    assert landing.storage.list_files("missing") == []


def test_fingerprint_same_content_same_fingerprint(landing):
    for drop in ("d1", "d2"):
        landing.put(f"{drop}/a.bin", b"same bytes")
        landing.put(f"{drop}/_SUCCESS")
    landing.put("d3/a.bin", b"other byte")  # same name and size, other content
    fp = landing.storage.fingerprint
    assert fp("d1") == fp("d2")
    assert fp("d3") != fp("d1")


def test_child_prefix(landing):
    landing.put("pool_a/d1/x.bin", b"x")
    landing.put("pool_a/d1/_SUCCESS")
    child = landing.storage.child("pool_a")
    assert [d.drop_id for d in child.list_drops()] == ["d1"]
    assert child.list_files("d1")[0].name == "x.bin"
    with pytest.raises(ValueError, match=r"\.\."):
        landing.storage.child("../elsewhere")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden"])
def test_methods_refuse_invalid_drop_ids(local_landing, bad):
    for method in ("list_files", "drop_url", "fingerprint", "is_complete"):
        with pytest.raises(ValueError, match="invalid drop id"):
            getattr(local_landing.storage, method)(bad)
