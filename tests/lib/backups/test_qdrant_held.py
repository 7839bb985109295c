"""Reading points as a Qdrant holds them, and what each Qdrant holds of the values it is given."""

import json

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups import qdrant_held
from gsv_pipelines.lib.backups.qdrant_held import EMBEDDED_ON_DISK, IN_MEMORY, SERVER, held_form
from tests.lib.backups.qdrant_corpus import corpus, differences, exact, read_as_held


def _as_held(points) -> dict:
    """qdrant_held's points in read_as_held's terms."""
    found = {}
    for point in points:
        vectors = tuple(sorted((n, exact(v)) for n, v in qdrant_held.vectors_of(point).items()))
        found[point.id] = (vectors, qdrant_held.payload_of(point))
    return found


def _payload_json(found: dict) -> dict:
    return {i: (v, json.dumps(p, sort_keys=True)) for i, (v, p) in found.items()}


def test_embedded_points_are_read_as_a_freshly_opened_client_reads_the_folder(tmp_path):
    """Pins the one reach into qdrant-client's local mode: after upserts and queries (which
    change the in-memory copy), the points read equal what a fresh client returns."""
    path = str(tmp_path / "qdrant")
    client = QdrantClient(path=path)
    specs = corpus(7)
    for spec in specs:
        spec.create(client)
    client.query_points("dense_cosine_1", query=[1.0], limit=5)
    batches, retrieved = {}, {}
    for spec in specs:
        points = [p for batch in qdrant_held.batches(client, spec.name, 7) for p in batch]
        assert all(len(b) <= 7 for b in qdrant_held.batches(client, spec.name, 7))
        batches[spec.name] = _payload_json(_as_held(points))
        ids = [p.id for p in spec.points]
        retrieved[spec.name] = _payload_json(
            _as_held(qdrant_held.retrieve(client, spec.name, [*ids, 123456789]).values())
        )
    assert qdrant_held.mode(client) == EMBEDDED_ON_DISK
    client.close()
    for spec in specs:
        truth = read_as_held(path, spec.name)
        assert differences(truth, batches[spec.name]) == [], spec.name
        assert differences(truth, retrieved[spec.name]) == [], spec.name


def test_an_in_memory_client_is_read_through_the_api():
    client = QdrantClient(":memory:")
    assert qdrant_held.mode(client) == IN_MEMORY
    spec = corpus(8)[0]
    spec.create(client)
    [points] = list(qdrant_held.batches(client, spec.name, 100))
    assert {p.id for p in points} == {p.id for p in spec.points}


def test_a_local_mode_laid_out_otherwise_is_a_clear_error(tmp_path, monkeypatch):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    spec = corpus(8)[0]
    spec.create(client)
    storage = client._client.collections[spec.name].storage
    monkeypatch.delattr(type(storage), "encode_key")
    with pytest.raises(qdrant_held.HeldPointsError, match="laid out differently"):
        list(qdrant_held.batches(client, spec.name, 10))
    client.close()


COSINE = models.VectorParams(size=3, distance=models.Distance.COSINE)
DOT = models.VectorParams(size=3, distance=models.Distance.DOT)


def test_embedded_qdrant_holds_exactly_what_it_is_given():
    value = [0.1, 0.2, 0.3000000001]
    assert held_form(EMBEDDED_ON_DISK, COSINE, value) == (value, 0.0)
    sparse = models.SparseVector(indices=[5, 1], values=[0.1, 0.2])
    assert held_form(EMBEDDED_ON_DISK, None, sparse) == (sparse, 0.0)


def test_a_server_holds_float32_and_normalizes_cosine_vectors_not_unit_already():
    # Qdrant (lib/segment/src/spaces/simple.rs, CosineMetric::preprocess) normalizes a cosine
    # vector unless its squared length is within 1e-6 of 1 or below f32::EPSILON.
    held, tolerance = held_form(SERVER, DOT, [0.1, 0.2, 0.3])
    assert held == np.float32([0.1, 0.2, 0.3]).astype(float).tolist() and tolerance == 0
    held, tolerance = held_form(SERVER, COSINE, [3.0, 4.0, 0.0])
    assert held == pytest.approx([0.6, 0.8, 0.0], abs=1e-7) and tolerance > 0
    # What a server returns for a cosine vector is unit already: given back, it keeps it as is.
    unit = held
    assert held_form(SERVER, COSINE, unit) == (unit, 0.0)
    assert held_form(SERVER, COSINE, [0.0, 0.0, 0.0]) == ([0.0, 0.0, 0.0], 0.0)
    half = models.VectorParams(size=3, distance="Dot", datatype=models.Datatype.FLOAT16)
    assert held_form(SERVER, half, [0.1, 0.2, 0.3])[0] == (
        np.float16([0.1, 0.2, 0.3]).astype(float).tolist()
    )
    multi = models.VectorParams(
        size=2,
        distance="Cosine",
        multivector_config=models.MultiVectorConfig(comparator="max_sim"),
    )
    held, _ = held_form(SERVER, multi, [[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(held, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)
    sparse, tolerance = held_form(SERVER, None, models.SparseVector(indices=[2], values=[0.1]))
    assert sparse.values == [float(np.float32(0.1))] and tolerance == 0


def test_values_compare_bit_for_bit_unless_a_tolerance_is_given():
    assert qdrant_held.same_values([1.0, 2.0], [1.0, 2.0])
    assert not qdrant_held.same_values([1.0, 2.0], [1.0, float(np.nextafter(2.0, 3.0))])
    assert not qdrant_held.same_values([0.0], [-0.0])
    assert not qdrant_held.same_values([[1.0, 2.0]], [1.0, 2.0])
    assert qdrant_held.same_values([0.6, 0.8], [0.6000001, 0.8], tolerance=1e-6)
    assert not qdrant_held.same_values([0.6, 0.8], [0.6001, 0.8], tolerance=1e-6)
    a = models.SparseVector(indices=[1, 5], values=[0.5, 0.25])
    b = models.SparseVector(indices=[5, 1], values=[0.25, 0.5])
    assert qdrant_held.same_values(a, b)
    assert not qdrant_held.same_values(a, models.SparseVector(indices=[1], values=[0.5]))
    assert not qdrant_held.same_values(a, [0.5, 0.25])
