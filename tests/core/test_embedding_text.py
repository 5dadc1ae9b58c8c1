"""Text embedder with the real all-MiniLM-L6-v2 weights (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.embedding import EmbedderSpec, Item, folder_items, identity_version
from curation.embedding.text import TextEmbedder
from curation_demo.data import build_text_drops, read_labels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder(EmbedderSpec(kind="text", batch_size=8, device="cpu", num_threads=2))


def test_paraphrases_are_closer_than_unrelated_sentences(embedder):
    pairs = [
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
        ("The stock market fell sharply today.", "Share prices dropped a lot this day."),
        ("How do I bake bread at home?", "What is a recipe for homemade bread?"),
        ("The train to Paris was delayed.", "Our rail journey to Paris ran late."),
    ]
    texts = [t for pair in pairs for t in pair]
    result = embedder.embed([Item(f"t{i}", text=t) for i, t in enumerate(texts)])
    v = result.vectors
    assert v.shape == (8, 384)
    sims = v @ v.T
    for i in range(len(pairs)):
        a, b = 2 * i, 2 * i + 1
        others = [j for j in range(len(texts)) if j not in (a, b)]
        assert sims[a, b] > sims[a, others].max(), (texts[a], sims[a])


def test_bad_texts_are_quarantined_and_the_good_ones_embedded(tmp_path, embedder):
    (tmp_path / "good.txt").write_text("Telescopes observe distant galaxies.\n")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (tmp_path / "zero.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\t ")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    lines = [
        json.dumps({"id": "a", "text": "The goalkeeper saved a penalty."}),
        "{not json",
        json.dumps({"id": "b"}),
        json.dumps({"id": "c", "text": "   "}),
        "",
        json.dumps({"id": "d", "text": "The nurse gave the patient a vaccine."}),
    ]
    raw = "\n".join(lines).encode() + b"\n" + b'{"id": "e", "text": "caf\xe9"}\n'
    (tmp_path / "items.jsonl").write_bytes(raw)
    result = embedder.embed(folder_items(tmp_path, "text"))
    names = [r.split("/")[-1] for r in result.refs]
    assert names == ["good.txt", "items.jsonl#L1", "items.jsonl#L6"]  # refs name the line
    reasons = {r.split("/")[-1]: why for r, why in result.quarantined}
    assert reasons["latin1.txt"].startswith("not UTF-8")
    assert reasons["zero.txt"].startswith("empty file")
    assert reasons["blank.txt"].startswith("empty text")
    assert reasons["image.png"].startswith("unsupported format: .png")
    assert reasons["items.jsonl#L2"].startswith("invalid JSON line")
    assert reasons["items.jsonl#L3"].startswith("invalid JSONL record")
    assert reasons["items.jsonl#L4"].startswith("empty text")
    assert reasons["items.jsonl#L7"].startswith("not UTF-8")
    assert len(reasons) == 8
    assert np.isfinite(result.vectors).all() and result.vectors.shape == (3, 384)


def test_identical_text_identical_vectors_and_ids(embedder):
    texts = ["Apples are red.", "Bananas are yellow.", "Apples are red."]
    result = embedder.embed([Item(f"t{i}", text=t) for i, t in enumerate(texts)])
    assert np.array_equal(result.vectors[0], result.vectors[2])
    assert result.item_ids[0] == result.item_ids[2] != result.item_ids[1]
    again = embedder.embed([Item(f"t{i}", text=t) for i, t in enumerate(texts)])
    assert np.array_equal(result.vectors, again.vectors)


def test_identity_changes_with_the_model_settings(embedder):
    base = identity_version(embedder.identity())

    def version(**options) -> str:
        return identity_version(TextEmbedder(EmbedderSpec(kind="text", **options)).identity())

    assert version(batch_size=3, device="cpu") == base
    assert version(device="cpu", max_seq_length=64) != base
    assert version(device="cpu", normalize=False) != base


def test_demo_corpus_topics_are_neighbours(tmp_path, embedder):
    drops = build_text_drops(tmp_path, n_drops=2, n_items=120, seed=1)
    labels = read_labels(tmp_path / "labels.csv")
    items = [it for d in drops for it in folder_items(tmp_path / d, "text")]
    result = embedder.embed(items)
    assert len(result.refs) == 120 and not result.quarantined
    record_ids = {}  # ref file#L<n> -> the record's id, read from the file
    for d in drops:
        path = tmp_path / d / "texts.jsonl"
        for n, line in enumerate(path.read_text().split("\n"), start=1):
            if line.strip():
                record_ids[f"{path}#L{n}"] = json.loads(line)["id"]
    y = np.array([labels[record_ids[ref]] for ref in result.refs])
    sims = result.vectors @ result.vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(axis=1)
    assert (y[nearest] == y).mean() > 0.9
