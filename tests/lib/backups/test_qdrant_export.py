import json
import random
import uuid
from unittest import mock

import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups import qdrant_held
from gsv_pipelines.lib.backups.qdrant_export import (
    POINTS_FILE,
    ExportError,
    create_like,
    export_collection,
    restore_collection,
)
from gsv_pipelines.lib.core.store import ArtefactStore
from tests.lib.backups.qdrant_corpus import corpus, differences, exact, random_spec, read_as_held


@pytest.fixture
def qdrant(tmp_path):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    yield client
    client.close()


def _store(where: str, tmp_path, request) -> ArtefactStore:
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        store = ArtefactStore(f"s3://export-{uuid.uuid4().hex[:8]}/gsv", s3.storage_options())
        store.fs.mkdir(store.root.split("/")[0])
        return store
    return ArtefactStore(str(tmp_path / "store"))


def _round_trip(client: QdrantClient, path: str, store: ArtefactStore, specs) -> dict:
    """Create, export (batches of 7) and restore (batches of 5) each spec in the client that
    wrote them, as a backup right after an upsert does; then compare, with the client closed,
    what the folder holds of each source and its copy."""
    for spec in specs:
        spec.create(client)
    for spec in specs:
        files, details = export_collection(client, spec.name, store, f"q/{spec.name}", batch_size=7)
        assert details["points"] == len(spec.points)
        assert [store.hash(f.key) for f in files] == files  # what was hashed is what is stored
        restored = restore_collection(client, store, f"q/{spec.name}", f"{spec.name}_copy", 5)
        assert restored == len(spec.points)
        assert (
            client.get_collection(f"{spec.name}_copy").config.params
            == client.get_collection(spec.name).config.params
        )
    client.close()
    found = {}
    for spec in specs:
        source = read_as_held(path, spec.name)
        assert len(source) == len(spec.points)
        found[spec.name] = differences(source, read_as_held(path, f"{spec.name}_copy"))
    return found


@pytest.mark.parametrize("where", ["local", "s3"])
def test_every_shape_round_trips_bit_for_bit(tmp_path, where, request):
    path = str(tmp_path / "qdrant")
    found = _round_trip(QdrantClient(path=path), path, _store(where, tmp_path, request), corpus(1))
    assert found == {spec.name: [] for spec in corpus(1)}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_shapes_round_trip_bit_for_bit(tmp_path, seed):
    rng = random.Random(seed)
    specs = [random_spec(rng, f"random_{n}") for n in range(6)]
    path = str(tmp_path / "qdrant")
    found = _round_trip(QdrantClient(path=path), path, ArtefactStore(str(tmp_path / "s")), specs)
    assert found == {spec.name: [] for spec in specs}


def _rows_as_held(store: ArtefactStore, key: str) -> dict:
    """The export's rows in read_as_held's terms, read with pyarrow alone."""
    with store.open(key) as f:
        rows = pq.ParquetFile(f).read().to_pylist()
    held = {}
    for row in rows:
        point_id = row["id_int"] if row["id_int"] is not None else row["id_uuid"]
        vectors = {}
        for column, value in row.items():
            if value is None or column in ("id_int", "id_uuid", "payload"):
                continue
            if column.startswith("sparse:"):
                _, name, part = column.split(":")
                vectors.setdefault(name, {})[part] = value
            else:
                vectors[column.partition(":")[2]] = value
        for name, value in vectors.items():
            if isinstance(value, dict):
                vectors[name] = models.SparseVector(**value)
        spelled = tuple(sorted((n, exact(v)) for n, v in vectors.items()))
        held[point_id] = (spelled, json.dumps(json.loads(row["payload"]), sort_keys=True))
    return held


def test_the_export_holds_what_the_folder_holds_even_after_queries(tmp_path):
    """Embedded Qdrant normalizes cosine vectors in memory on upsert and on every query; the
    backup must hold the folder's values, whatever the process did before it."""
    path = str(tmp_path / "qdrant")
    client = QdrantClient(path=path)
    store = ArtefactStore(str(tmp_path / "store"))
    specs = corpus(2)
    for spec in specs:
        spec.create(client)
        named = spec.vectors if isinstance(spec.vectors, dict) else {None: spec.vectors}
        for name, params in named.items():
            if spec.points and params.multivector_config is None:
                # A cosine query normalizes the in-memory copy of the vectors in place.
                client.query_points(spec.name, query=[1.0] * params.size, using=name, limit=3)
        export_collection(client, spec.name, store, f"q/{spec.name}", batch_size=7)
    client.close()
    for spec in specs:
        assert (
            differences(
                read_as_held(path, spec.name), _rows_as_held(store, f"q/{spec.name}/{POINTS_FILE}")
            )
            == []
        ), spec.name


def test_cosine_vectors_are_exported_as_given_not_as_normalized(tmp_path):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection(
        "c", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE)
    )
    client.upsert("c", [models.PointStruct(id=1, vector=[0.1, 0.2, 0.3000000001])])
    assert client.retrieve("c", [1], with_vectors=True)[0].vector != [0.1, 0.2, 0.3000000001]
    store = ArtefactStore(str(tmp_path / "store"))
    export_collection(client, "c", store, "q/c")
    client.close()
    with store.open(f"q/c/{POINTS_FILE}") as f:
        assert pq.ParquetFile(f).read().column("vector").to_pylist() == [[0.1, 0.2, 0.3000000001]]


@pytest.mark.parametrize(("id_page", "row_groups"), [(50_000, 3), (600, 5)])
def test_through_the_api_ids_come_in_pages_and_points_in_row_groups(tmp_path, id_page, row_groups):
    """A server (here qdrant-client's in-memory mode, which answers from what it holds) is read
    by the API: every id a page at a time, then the points by id in batches."""
    client = QdrantClient(":memory:")
    spec = corpus(3, count=2500)[0]
    spec.create(client)
    store = ArtefactStore(str(tmp_path / "store"))
    with mock.patch.object(qdrant_held, "_id_pages", wraps=qdrant_held._id_pages) as pages:
        qdrant_held_batches = list(qdrant_held.batches(client, spec.name, 1000, id_page=id_page))
        assert pages.call_args.args[2] == id_page
    # Batches of 1000 within pages of ids: 1000+1000+500, or 600 x 4 + 100.
    assert len(qdrant_held_batches) == row_groups
    export_collection(client, spec.name, store, "q/1", batch_size=1000)
    with store.open(f"q/1/{POINTS_FILE}") as f:
        parquet = pq.ParquetFile(f)
        assert parquet.metadata.num_row_groups == 3
        rows = parquet.read().to_pylist()
    records, _ = client.scroll(spec.name, limit=10_000, with_vectors=True)
    assert {r["id_int"]: r["vector"] for r in rows} == {r.id: r.vector for r in records}


def test_restore_refuses_an_existing_target(qdrant, tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    for spec in corpus(1)[:2]:
        spec.create(qdrant)
    export_collection(qdrant, "dense_cosine_1", store, "q/plain/1")
    with pytest.raises(ExportError, match="restore target 'dense_dot_3' already exists"):
        restore_collection(qdrant, store, "q/plain/1", "dense_dot_3")


def test_missing_collection_is_a_clear_error(qdrant, tmp_path):
    with pytest.raises(ExportError, match="collection 'nope' does not exist"):
        export_collection(qdrant, "nope", ArtefactStore(str(tmp_path)), "q/nope/1")


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
