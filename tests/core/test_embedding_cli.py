"""`curate embed` end to end, the Dagster resource, and precomputed vectors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.embedding import EmbedderSpec, identity_version
from curation.embedding.vectors import VectorReader
from curation_demo.data import build_fashion_mnist_drops

pytestmark = pytest.mark.slow


def test_curate_embed_images_end_to_end(tmp_path, capsys):
    drops = build_fashion_mnist_drops(tmp_path / "landing", n_drops=1, n_items=12, seed=3)
    drop = tmp_path / "landing" / drops[0]
    (drop / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out" / "emb.parquet"
    rc = main(
        [
            "embed",
            "--input",
            str(drop),
            "--out",
            str(out),
            "--image-size",
            "32",
            "--batch-size",
            "5",
            "--device",
            "cpu",
            "--num-threads",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["embedded"] == 12 and summary["quarantined"] == 1
    table = pq.read_table(out)
    assert table.num_rows == 12
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 1280)
    for uri, item_id in zip(table["uri"].to_pylist(), table["item_id"].to_pylist(), strict=True):
        assert hashlib.sha256(open(uri, "rb").read()).hexdigest() == item_id
    vectors = np.asarray(table["vector"].combine_chunks().flatten()).reshape(12, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    meta = table.schema.metadata
    identity = json.loads(meta[b"embedder_identity"])
    assert identity["name"] == "efficientnet-lite0" and identity["dim"] == 1280
    assert meta[b"embedder_version"].decode() == identity_version(identity)
    assert set(table["embedder_version"].to_pylist()) == {identity_version(identity)}
    quarantine = json.loads((tmp_path / "out" / "emb.quarantine.json").read_text())
    assert [q["uri"].rsplit("/", 1)[1] for q in quarantine["quarantined"]] == ["broken.png"]
    # the core's loader (used by `curate cluster`) reads the file
    from curation.io import load_embeddings

    assert load_embeddings(out).shape == (12, 1280)


def test_curate_embed_rejects_bad_options(tmp_path, capsys):
    rc = main(
        [
            "embed",
            "--input",
            str(tmp_path / "missing"),
            "--out",
            "x.csv",
            "--batch-size",
            "0",
            "--kind",
            "audio",
            "--device",
            "tpu",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    for fragment in (
        "--input=",
        "--out='x.csv'",
        "--batch-size='0'",
        "--kind='audio'",
        "--device='tpu'",
    ):
        assert fragment in err


def test_precomputed_vectors_with_bad_rows(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(5, 8)).astype(np.float32)
    rows = [*good.tolist(), [1.0] * 7, [float("nan")] * 8, None]
    ids = [f"v{i}" for i in range(len(rows))]
    pq.write_table(
        pa.table({"item_id": ids, "vector": pa.array(rows, pa.list_(pa.float32()))}),
        tmp_path / "part.parquet",
    )
    reader = VectorReader(EmbedderSpec(kind="vectors", dim=8, batch_size=3, normalize=False))
    result = reader.embed([tmp_path / "part.parquet"])
    assert result.item_ids == ids[:5]
    np.testing.assert_array_equal(result.vectors, good)
    reasons = [why for _, why in result.quarantined]
    assert reasons[0].startswith("wrong dimension") and reasons[1].startswith("non-finite")
    assert reasons[2].startswith("missing vector")
    assert [ref.rsplit("/", 1)[-1] for ref, _ in result.quarantined] == [
        "part.parquet#row=5", "part.parquet#row=6", "part.parquet#row=7"]  # raw's refs
    pq.write_table(pa.table({"item_id": ["s"], "vector": [1.0]}), tmp_path / "scalar.parquet")
    (scalar,) = reader.embed([tmp_path / "scalar.parquet"]).quarantined
    assert scalar[1] == "'vector' column must hold lists of numbers, not double"
    out = tmp_path / "o" / "v.parquet"
    assert (
        main(
            [
                "embed",
                "--input",
                str(tmp_path),
                "--out",
                str(out),
                "--kind",
                "vectors",
                "--dim",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    assert pq.read_table(out).num_rows == 5


def test_dagster_resource_is_a_thin_wrapper(tmp_path):
    from curation.embedding.images import ImageEmbedder
    from resources.embedders import EmbedderResource

    resource = EmbedderResource(kind="image", image_size=32, device="cpu", batch_size=4)
    embedder = resource.get_embedder()
    assert isinstance(embedder, ImageEmbedder)
    assert resource.get_embedder() is embedder  # one loaded model per configuration
    assert resource.identity_version() == identity_version(embedder.identity())
    other = EmbedderResource(kind="image", image_size=48, device="cpu")
    assert other.identity_version() != resource.identity_version()
    (tmp_path / "a.txt").write_text("x")
    items = list(resource.items([str(tmp_path / "a.txt")]))
    assert items[0].error.startswith("unsupported format")


def test_resource_fields_are_the_specs():
    """EmbedderResource declares no option of its own: its fields are EmbedderSpec's (same
    defaults and constraints), and its spec() round-trips every one."""
    from pydantic import ValidationError

    from curation.embedding import EmbedderSpec
    from resources.embedders import EmbedderResource

    assert list(EmbedderResource.model_fields) == list(EmbedderSpec.model_fields)
    for name, info in EmbedderSpec.model_fields.items():
        assert EmbedderResource.model_fields[name].default == info.default, name
    assert EmbedderResource().spec() == EmbedderSpec()
    spec = EmbedderResource(kind="image", batch_size=3, mean=[0.1, 0.2, 0.3]).spec()
    assert (spec.kind, spec.batch_size, spec.mean) == ("image", 3, (0.1, 0.2, 0.3))
    spec = EmbedderResource(kind="text", max_seq_length=32).spec()
    assert (spec.kind, spec.max_seq_length) == ("text", 32)
    # an option another kind reads would be silently ignored: refused, naming it
    with pytest.raises(ValueError, match=r"\['image_size'\] do not apply to a text embedder"):
        EmbedderResource(kind="text", image_size=64).spec()
    with pytest.raises(ValidationError, match="image_size"):
        EmbedderResource(image_size=4)


def test_embedders_take_the_validated_spec():
    """Options are checked and defaulted once, by EmbedderSpec: an embedder keeps the spec it
    is given (no defaults of its own) and refuses a spec of another kind."""
    from curation.embedding.images import ImageEmbedder

    spec = EmbedderSpec(kind="vectors", dim=8)
    reader = VectorReader(spec)
    assert reader.spec is spec and reader.dim == 8
    assert reader.identity()["normalize"] is EmbedderSpec.model_fields["normalize"].default
    with pytest.raises(ValueError, match="ImageEmbedder embeds kind 'image'"):
        ImageEmbedder(spec)
