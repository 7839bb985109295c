import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.qdrant_export import (
    POINTS_FILE,
    ExportError,
    create_like,
    export_collection,
    restore_collection,
)
from gsv_pipelines.lib.store import BackupStore


@pytest.fixture
def qdrant(tmp_path):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    yield client
    client.close()


def _fill(client: QdrantClient) -> None:
    rng = np.random.default_rng(3)
    client.create_collection(
        "plain", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    client.upsert(
        "plain",
        points=[
            models.PointStruct(id=i, vector=rng.normal(size=8).tolist(), payload={"i": i})
            for i in range(2500)
        ],
    )
    client.create_collection(
        "mixed",
        vectors_config={
            "text": models.VectorParams(size=5, distance=models.Distance.DOT),
            "image": models.VectorParams(
                size=3,
                distance=models.Distance.EUCLID,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
            ),
        },
        sparse_vectors_config={"keywords": models.SparseVectorParams()},
    )
    points = []
    for i in range(300):
        vector = {"text": rng.normal(size=5).tolist()}
        if i % 3:
            vector["image"] = rng.normal(size=(i % 4 + 1, 3)).tolist()
        if i % 2:
            vector["keywords"] = models.SparseVector(indices=[i, i + 7], values=[0.5, -1.25])
        payload = {"tenant": f"t{i % 4}", "note": "Grüße ✓", "nested": {"a": [1, None, {"b": i}]}}
        points.append(
            models.PointStruct(id=str(uuid.UUID(int=i + 1)), vector=vector, payload=payload)
        )
    client.upsert("mixed", points=points)
    client.create_collection(
        "empty", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )


def _all_points(client: QdrantClient, name: str) -> dict:
    records, _ = client.scroll(name, limit=100_000, with_vectors=True, with_payload=True)

    def as32(vector):
        if isinstance(vector, models.SparseVector):
            return ("sparse", vector.indices, np.float32(vector.values).tolist())
        if isinstance(vector, dict):
            return {k: as32(v) for k, v in sorted(vector.items())}
        return np.asarray(vector, dtype=np.float32).tolist()

    return {r.id: (as32(r.vector), r.payload) for r in records}


def _assert_same_points(client: QdrantClient, source: str, copy: str) -> None:
    """Every point equal. Cosine collections normalize on insert, and normalizing an already
    normalized float32 vector may move its last bit: those vectors are equal to 1e-6."""
    expected, actual = _all_points(client, source), _all_points(client, copy)
    assert actual.keys() == expected.keys()
    vectors = client.get_collection(source).config.params.vectors
    cosine = isinstance(vectors, models.VectorParams) and vectors.distance == models.Distance.COSINE
    for point_id, (vector, payload) in expected.items():
        assert actual[point_id][1] == payload
        if cosine:
            np.testing.assert_allclose(actual[point_id][0], vector, rtol=1e-6, atol=1e-7)
        else:
            assert actual[point_id][0] == vector


@pytest.mark.parametrize("where", ["local", "s3"])
def test_export_then_restore_is_lossless(qdrant, tmp_path, where, request):
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        store = BackupStore(f"s3://export-{uuid.uuid4().hex[:8]}/gsv", s3.storage_options())
        store.fs.mkdir(store.root.split("/")[0])
    else:
        store = BackupStore(str(tmp_path / "store"))
    _fill(qdrant)
    for name, expected_points in [("plain", 2500), ("mixed", 300), ("empty", 0)]:
        files, details = export_collection(qdrant, name, store, f"q/{name}/1", batch_size=700)
        assert details["points"] == expected_points
        assert [store.hash(f.key) for f in files] == files  # what was hashed is what is stored
        restored = restore_collection(qdrant, store, f"q/{name}/1", f"{name}_restored")
        assert restored == expected_points
        _assert_same_points(qdrant, name, f"{name}_restored")
        source, copy = qdrant.get_collection(name), qdrant.get_collection(f"{name}_restored")
        assert copy.config.params == source.config.params


@pytest.mark.parametrize(("id_page", "row_groups"), [(50_000, 3), (600, 5)])
def test_the_export_holds_exactly_what_qdrant_returned_in_row_groups(
    qdrant, tmp_path, monkeypatch, id_page, row_groups
):
    monkeypatch.setattr("gsv_pipelines.lib.qdrant_export.ID_PAGE", id_page)
    store = BackupStore(str(tmp_path / "store"))
    _fill(qdrant)
    export_collection(qdrant, "plain", store, "q/plain/1", batch_size=1000)
    with store.open(f"q/plain/1/{POINTS_FILE}") as f:
        parquet = pq.ParquetFile(f)
        # Batches of 1000 within pages of ids: 1000+1000+500, or 600 x 4 + 100.
        assert parquet.metadata.num_row_groups == row_groups
        rows = parquet.read().to_pylist()
    exported = {r["id_int"]: (r["vector"], json.loads(r["payload"])) for r in rows}
    assert exported == _all_points(qdrant, "plain")


def test_restore_refuses_an_existing_target(qdrant, tmp_path):
    store = BackupStore(str(tmp_path / "store"))
    _fill(qdrant)
    export_collection(qdrant, "plain", store, "q/plain/1")
    with pytest.raises(ExportError, match="restore target 'mixed' already exists"):
        restore_collection(qdrant, store, "q/plain/1", "mixed")


def test_missing_collection_is_a_clear_error(qdrant, tmp_path):
    with pytest.raises(ExportError, match="collection 'nope' does not exist"):
        export_collection(qdrant, "nope", BackupStore(str(tmp_path)), "q/nope/1")


class RecordingClient:
    """Stands in for a Qdrant server's client: records what create_like asks for."""

    def __init__(self):
        self.calls = []

    def create_collection(self, name, **kwargs):
        self.calls.append(("create_collection", name, kwargs))

    def create_payload_index(self, name, field_name, field_schema, wait):
        self.calls.append(("create_payload_index", name, field_name, field_schema))


def test_payload_indexes_and_tuning_are_recreated():
    # Embedded Qdrant keeps no payload indexes, so the server-shaped config is written here.
    config = {
        "config": {
            "params": {
                "vectors": {"size": 4, "distance": "Cosine"},
                "shard_number": 2,
                "replication_factor": 1,
                "on_disk_payload": True,
            },
            "hnsw_config": {"m": 32, "ef_construct": 200, "full_scan_threshold": 10000},
            "optimizer_config": {"indexing_threshold": 50000, "max_segment_size": None},
            "quantization_config": {"scalar": {"type": "int8", "always_ram": True}},
        },
        "payload_schema": {
            "tenant": {"data_type": "keyword", "params": None, "points": 10},
            "text": {
                "data_type": "text",
                "params": {"type": "text", "tokenizer": "word", "lowercase": True},
                "points": 10,
            },
        },
    }
    client = RecordingClient()
    create_like(client, "copy", json.loads(json.dumps(config)))
    (_, name, kwargs), *indexes = client.calls
    assert name == "copy"
    assert kwargs["vectors_config"] == models.VectorParams(size=4, distance="Cosine")
    assert kwargs["shard_number"] == 2 and kwargs["on_disk_payload"] is True
    assert kwargs["hnsw_config"] == models.HnswConfigDiff(
        m=32, ef_construct=200, full_scan_threshold=10000
    )
    assert kwargs["optimizers_config"] == models.OptimizersConfigDiff(indexing_threshold=50000)
    assert kwargs["quantization_config"] == config["config"]["quantization_config"]
    assert indexes == [
        ("create_payload_index", "copy", "tenant", "keyword"),
        ("create_payload_index", "copy", "text", config["payload_schema"]["text"]["params"]),
    ]
