"""The restore path on embedded Qdrant: exact restores pass, every kind of damage is caught."""

import json
import os
import posixpath
import random
import shutil
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups import probes as restore_probes
from gsv_pipelines.lib.backups.make import backup_qdrant_collection
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.qdrant import QdrantHandler
from gsv_pipelines.lib.drills.restore import DRILL, DRY_RUN, RESTORE, RestoreRequest, restore
from gsv_pipelines.lib.drills.scratch import PREFIX
from tests.lib.backups.qdrant_corpus import corpus, differences, exact, random_spec, read_as_held


@pytest.fixture
def client(tmp_path):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    rng = np.random.default_rng(7)
    client.create_collection(
        "memory", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    client.upsert(
        "memory",
        points=[
            models.PointStruct(
                id=i, vector=rng.normal(size=8).tolist(), payload={"i": i, "text": f"note {i}"}
            )
            for i in range(300)
        ],
    )
    client.create_collection(
        "mixed",
        vectors_config={"text": models.VectorParams(size=5, distance=models.Distance.DOT)},
        sparse_vectors_config={"keywords": models.SparseVectorParams()},
    )
    client.upsert(
        "mixed",
        points=[
            models.PointStruct(
                id=str(uuid.UUID(int=i + 1)),
                vector={
                    "text": rng.normal(size=5).tolist(),
                    "keywords": models.SparseVector(indices=[i, i + 3], values=[0.5, -1.5]),
                },
                payload={"tenant": f"t{i % 3}", "nested": {"a": [1, None]}},
            )
            for i in range(40)
        ],
    )
    yield client
    client.close()


@pytest.fixture
def store(tmp_path) -> ArtefactStore:
    return ArtefactStore(str(tmp_path / "store"))


def _backup(client, store, collection="memory"):
    return backup_qdrant_collection(
        client, collection, store, TargetPolicy(batch_size=64), server_url=None, api_key=None
    ).manifest


def _drill(client, store, collection="memory", **handler_options):
    handler = QdrantHandler(client, store, **handler_options)
    request = RestoreRequest("qdrant", collection, DRILL, rto_target_seconds=600)
    return restore(handler, store, request, run_id="run-drill-1")


def _scratch(client) -> list[str]:
    return [c.name for c in client.get_collections().collections if c.name.startswith(PREFIX)]


def test_the_backup_records_fingerprints_and_sample_queries_from_the_source(client, store):
    manifest = _backup(client, store)
    fingerprints = manifest.details["point_fingerprints"]
    assert fingerprints["points_seen"] == 300
    assert len(fingerprints["points"]) == restore_probes.FINGERPRINT_POINTS
    queries = manifest.details["sample_queries"]
    assert queries["unstable"] == 0
    assert len(queries["queries"]) == restore_probes.SAMPLE_QUERIES
    [first, *_] = queries["queries"]
    assert len(first["vector"]) == 8 and len(first["answer"]) == restore_probes.TOP_K
    # The answers are the source's own exact top-k.
    again = restore_probes.ask(client, "memory", None, first["vector"], restore_probes.TOP_K)
    assert [p["id"] for p in again] == [p["id"] for p in first["answer"]]


@pytest.mark.parametrize("collection", ["memory", "mixed"])
def test_a_drill_after_a_backup_passes_with_exact_counts(client, store, collection):
    manifest = _backup(client, store, collection)
    evidence = _drill(client, store, collection)

    assert evidence.error is None, evidence.error
    assert evidence.verified and evidence.rto_ok and evidence.rpo_ok
    checks = {c.name: c for c in evidence.checks}
    assert checks["point_count"].passed
    expected = 300 if collection == "memory" else 40
    assert checks["point_count"].detail == f"{expected} points, the manifest says {expected}"
    assert checks["points_equal_backup"].detail.startswith(f"every point: {expected} point(s)")
    assert checks["backup_checksums"].passed and checks["point_fingerprints"].passed
    assert checks["sample_queries"].passed
    assert evidence.backup["backup_id"] == manifest.backup_id
    assert evidence.backup["files"] == manifest.files
    assert evidence.destination.startswith(f"{PREFIX}{collection}_")
    assert evidence.cleaned_up == [f"dropped scratch copy {evidence.destination}"]
    assert _scratch(client) == []
    assert 0 < evidence.rto_seconds < 600
    assert {"verify_backup", "restore", "verify", "cleanup"} <= set(evidence.phases)


def test_above_the_threshold_a_seeded_sample_and_the_fingerprinted_points_are_compared(
    client, store
):
    manifest = _backup(client, store)
    evidence = _drill(client, store, compare_all_up_to=100, sample_size=25, seed=3)
    [check] = [c for c in evidence.checks if c.name == "points_equal_backup"]
    with store.open(f"{manifest.folder}/points.parquet") as f:
        order = pq.read_table(f, columns=["id_int"]).column("id_int").to_pylist()
    sampled = {order[i] for i in random.Random(3).sample(range(300), 25)}
    fingerprinted = {f["id"] for f in manifest.details["point_fingerprints"]["points"]}
    assert check.passed
    assert check.detail == (
        f"a seeded sample (seed 3) and every fingerprinted point: "
        f"{len(sampled | fingerprinted)} point(s) equal their rows in the backup"
    )


def test_a_corrupted_backup_fails_at_its_checksum_and_restores_nothing(client, store):
    manifest = _backup(client, store)
    path = store.fs._strip_protocol(store.location(f"{manifest.folder}/points.parquet"))
    with open(path, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0x01]))

    evidence = _drill(client, store)

    assert not evidence.verified and evidence.rto_seconds is None and not evidence.rto_ok
    [check] = evidence.checks
    assert (check.name, check.passed) == ("backup_checksums", False)
    assert check.detail == "points.parquet: SHA-256 differs from the manifest"
    assert "fails its checksums" in evidence.error
    assert evidence.destination is None and _scratch(client) == []


def _rewrite_points(store: ArtefactStore, manifest, change) -> None:
    """Alter the backup's data, then recompute its checksum: silent corruption."""
    key = posixpath.join(manifest.folder, "points.parquet")
    with store.open(key) as f:
        table = pq.read_table(f)
    rows = table.to_pylist()
    change(rows)
    with store.open(key, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)
    stored = store.hash(key)
    for entry in manifest.files:
        if entry["name"] == "points.parquet":
            entry.update(size=stored.size, sha256=stored.sha256)
    manifests.commit(store, manifest)


@pytest.mark.parametrize("what", ["vector", "payload"])
def test_data_altered_after_the_checksum_was_recomputed_fails_the_point_comparison(
    client, store, what
):
    manifest = _backup(client, store)
    sampled = manifest.details["point_fingerprints"]["points"][0]["id"]

    def alter(rows):
        row = next(r for r in rows if r["id_int"] == sampled)
        if what == "vector":
            row["vector"] = row["vector"][::-1]  # still a unit vector, as cosine stores
        else:
            row["payload"] = json.dumps({"i": -1, "text": "rewritten"})

    _rewrite_points(store, manifest, alter)
    evidence = _drill(client, store)

    checks = {c.name: c for c in evidence.checks}
    assert checks["backup_checksums"].passed  # the checksum was recomputed: it cannot tell
    assert checks["points_equal_backup"].passed  # the copy is faithful to the altered file
    assert checks["point_fingerprints"].passed is False
    detail = "vector differs" if what == "vector" else "payload differs"
    assert f"point {sampled}: {detail}" in checks["point_fingerprints"].detail
    assert not evidence.verified and evidence.rto_seconds is None
    assert "does not match backup" in evidence.error
    assert _scratch(client) == []


def test_a_point_missing_from_the_backup_fails_the_count_and_the_fingerprints(client, store):
    manifest = _backup(client, store)
    sampled = manifest.details["point_fingerprints"]["points"][5]["id"]
    _rewrite_points(
        store, manifest, lambda rows: rows.remove(next(r for r in rows if r["id_int"] == sampled))
    )
    evidence = _drill(client, store)
    checks = {c.name: c for c in evidence.checks}
    assert checks["point_count"].detail == "299 points, the manifest says 300"
    assert f"point {sampled}: missing" in checks["point_fingerprints"].detail
    assert not evidence.verified


def test_the_drill_refuses_to_restore_into_the_source(client, store):
    _backup(client, store)
    handler = QdrantHandler(client, store)
    request = RestoreRequest("qdrant", "memory", DRILL, scratch_name="{target}")
    evidence = restore(handler, store, request, run_id="run-drill-2")
    assert evidence.error == (
        "refusing to restore qdrant/memory into memory: the scratch copy would be the source itself"
    )
    assert client.count("memory", exact=True).count == 300
    assert not evidence.verified and evidence.destination is None


def test_no_backup_is_a_failed_target_without_rpo(client, store):
    evidence = _drill(client, store)
    assert evidence.error == f"no backup of qdrant/memory in {store.location()}"
    assert evidence.rpo_seconds is None and not evidence.rpo_ok
    assert [(c.name, c.passed) for c in evidence.checks] == [("backup_present", False)]


def test_rpo_is_measured_from_the_drill_start_to_the_backup(client, store):
    manifest = _backup(client, store)
    later = manifest.consistency_time + timedelta(hours=30)
    handler = QdrantHandler(client, store)
    request = RestoreRequest("qdrant", "memory", DRILL, rpo_target_seconds=26 * 3600)
    evidence = restore(handler, store, request, run_id="r", rpo_from=later)
    assert evidence.rpo_seconds == 30 * 3600
    assert evidence.verified and not evidence.rpo_ok


def test_a_dry_run_changes_nothing_and_a_restore_keeps_a_safety_backup(client, store):
    first = _backup(client, store)
    # After the backup the collection changes: a restore must bring back the backed-up state.
    client.upsert("memory", points=[models.PointStruct(id=999, vector=[1.0] * 8, payload={})])
    client.delete("memory", points_selector=models.PointIdsList(points=[0, 1]))
    handler = QdrantHandler(client, store)

    dry = restore(
        handler,
        store,
        RestoreRequest("qdrant", "memory", DRY_RUN, destination="memory"),
        run_id="run-dry",
    )
    assert dry.verified and dry.error is None
    assert dry.facts["destination_before"] == {"points": 299}
    assert client.count("memory", exact=True).count == 299
    assert len(manifests.list_backups(store, "qdrant", "memory")) == 1
    assert _scratch(client) == []

    real = restore(
        handler,
        store,
        RestoreRequest("qdrant", "memory", RESTORE, destination="memory"),
        run_id="run-real",
    )
    assert real.verified and real.error is None, real.error
    assert real.backup["backup_id"] == first.backup_id
    assert client.count("memory", exact=True).count == 300
    assert client.retrieve("memory", [999]) == []
    safety = real.safety_backup["backup_id"]
    [kept] = [m for m in manifests.list_backups(store, "qdrant", "memory") if m.backup_id == safety]
    assert kept.details["points"] == 299
    assert kept.details["reason"] == "safety backup before a restore overwrote it"
    assert real.cleaned_up == []


def test_leftovers_are_removed_only_with_prefix_marker_and_a_finished_run(client, store):
    from gsv_pipelines.lib.drills.restore import remove_leftovers
    from gsv_pipelines.lib.drills.scratch import marker

    now = datetime.now(UTC)
    params = models.VectorParams(size=2, distance=models.Distance.DOT)
    client.create_collection(
        f"{PREFIX}memory_killed", params, metadata=marker("dead-run", "drill", "qdrant", "m", now)
    )
    client.create_collection(
        f"{PREFIX}memory_running", params, metadata=marker("live-run", "drill", "qdrant", "m", now)
    )
    client.create_collection(f"{PREFIX}unmarked", params)
    client.create_collection(
        "marked_but_unprefixed", params, metadata=marker("x", "drill", "q", "m", now)
    )

    removed = remove_leftovers(QdrantHandler(client, store), {"live-run"}, now)

    assert len(removed) == 1 and f"{PREFIX}memory_killed" in removed[0]
    names = {c.name for c in client.get_collections().collections}
    assert f"{PREFIX}memory_killed" not in names
    assert {f"{PREFIX}memory_running", f"{PREFIX}unmarked", "marked_but_unprefixed"} <= names
    # A day later even a run that still looks alive has its copies removed.
    later = now + timedelta(hours=25)
    assert len(remove_leftovers(QdrantHandler(client, store), {"live-run"}, later)) == 1


def test_ties_compare_as_sets_and_the_cut_off_group_by_score():
    a = [{"id": 1, "score": 0.9}, {"id": 2, "score": 0.8}, {"id": 3, "score": 0.8}]
    assert restore_probes.answers_match(a, [a[0], a[2], a[1]])
    assert restore_probes.answers_match(a, [a[0], a[1], {"id": 7, "score": 0.8}])
    assert not restore_probes.answers_match(a, [{"id": 9, "score": 0.9}, a[1], a[2]])
    assert not restore_probes.answers_match(a, [a[0], a[1], {"id": 3, "score": 0.7}])
    assert not restore_probes.answers_match(a, a[:2])


FAKE_KEY = "fake-qdrant-key-8c1d"


@pytest.fixture
def fake_server():
    """The recorded-contract FAKE of a Qdrant server (tests/services/qdrant_fake.py)."""
    from tests.services.qdrant_fake import FakeQdrantSnapshotServer

    with FakeQdrantSnapshotServer({"agents": [0, 1]}, api_key=FAKE_KEY) as fake:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
            client = QdrantClient(url=fake.url, api_key=FAKE_KEY, check_compatibility=False)
        yield fake, client
        client.close()


def _snapshot_backup(fake, client, store):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
        return backup_qdrant_collection(
            client,
            "agents",
            store,
            TargetPolicy(method="snapshot"),
            server_url=fake.url,
            api_key=FAKE_KEY,
        ).manifest


def test_a_snapshot_backup_is_uploaded_with_priority_and_checksum_and_verified(fake_server, store):
    fake, client = fake_server
    manifest = _snapshot_backup(fake, client, store)
    assert manifest.method == "snapshot" and manifest.details["points"] == 2000
    assert manifest.details["point_fingerprints"]["points_seen"] == 2000
    [entry] = manifest.files

    handler = QdrantHandler(client, store, server_url=fake.url, api_key=FAKE_KEY)
    evidence = restore(handler, store, RestoreRequest("qdrant", "agents", DRILL), run_id="run-s")

    assert evidence.error is None and evidence.verified, evidence.error
    [upload] = fake.uploads
    assert upload.collection == evidence.destination
    assert upload.query == {"priority": "snapshot", "checksum": entry["sha256"]}
    checks = {c.name: c.passed for c in evidence.checks}
    assert checks == {
        "backup_checksums": True,
        "point_count": True,
        "collection_config": True,
        "points_equal_backup": None,
        "point_fingerprints": True,
        "sample_queries": True,
    }
    assert sorted(fake.collections) == ["agents"]  # the scratch copy was dropped
    assert FAKE_KEY not in json.dumps(evidence.to_dict())


def test_a_snapshot_restores_only_onto_its_minor_version_and_only_onto_a_server(
    fake_server, store, client
):
    fake, remote = fake_server
    manifest = _snapshot_backup(fake, remote, store)
    manifest.details["qdrant_version"] = "1.15.2"
    manifests.commit(store, manifest)
    handler = QdrantHandler(remote, store, server_url=fake.url, api_key=FAKE_KEY)
    evidence = restore(handler, store, RestoreRequest("qdrant", "agents", DRILL), run_id="r")
    assert "snapshot of Qdrant 1.15.2; this server runs 1.16.3" in evidence.error
    assert fake.uploads == []

    embedded = restore(
        QdrantHandler(client, store), store, RestoreRequest("qdrant", "agents", DRILL), run_id="r"
    )
    assert "restores onto a Qdrant server only" in embedded.error


class KeepingHandler(QdrantHandler):
    """The real handler, except that before it drops a scratch copy it copies the whole Qdrant
    folder aside, so the test can read that copy afterwards as the folder held it."""

    def __init__(self, client, store, path: Path, kept: Path, **options):
        super().__init__(client, store, **options)
        self.path, self.kept = path, kept

    def drop(self, name: str) -> None:
        if name.startswith(PREFIX):
            shutil.copytree(self.path, self.kept / name, ignore=shutil.ignore_patterns(".lock"))
        super().drop(name)


def _drill_corpus(tmp_path, specs, **options):
    """Back up every spec from the client that wrote it, drill it (restore into a scratch copy,
    verify, drop), and compare each copy with its source as the folders hold them."""
    path, kept = tmp_path / "qdrant", tmp_path / "kept"
    store = ArtefactStore(str(tmp_path / "store"))
    client = QdrantClient(path=str(path))
    evidence = {}
    for spec in specs:
        spec.create(client)
    handler = KeepingHandler(client, store, path, kept, batch_size=5, **options)
    for spec in specs:
        backup_qdrant_collection(
            client, spec.name, store, TargetPolicy(batch_size=7), server_url=None, api_key=None
        )
        request = RestoreRequest("qdrant", spec.name, DRILL)
        evidence[spec.name] = restore(handler, store, request, run_id="run-corpus")
    client.close()
    found = {}
    for spec in specs:
        copy = evidence[spec.name].destination
        found[spec.name] = differences(
            read_as_held(str(path), spec.name), read_as_held(str(kept / copy), copy)
        )
    return evidence, found


def test_every_shape_drills_verified_and_its_copy_equals_the_source(tmp_path):
    specs = corpus(5)
    evidence, found = _drill_corpus(tmp_path, specs)
    for spec in specs:
        e = evidence[spec.name]
        assert e.error is None and e.verified, (spec.name, e.error)
        checks = {c.name: c.passed for c in e.checks}
        assert checks == {
            "backup_checksums": True,
            "point_count": True,
            "collection_config": True,
            "points_equal_backup": True,
            "point_fingerprints": True if spec.points else None,
            # Sample queries need a dense vector to search and points to answer with.
            "sample_queries": checks["sample_queries"],
        }, spec.name
        assert checks["sample_queries"] is not False
    assert found == {spec.name: [] for spec in specs}


@pytest.mark.parametrize("seed", [21, 22])
def test_random_shapes_drill_verified_and_equal_to_the_source(tmp_path, seed):
    rng = random.Random(seed)
    specs = [random_spec(rng, f"random_{n}") for n in range(5)]
    # A low threshold: above it, a seeded sample and the fingerprinted points are compared.
    evidence, found = _drill_corpus(tmp_path, specs, compare_all_up_to=6, sample_size=3)
    assert {n: (e.error, e.verified) for n, e in evidence.items()} == {
        s.name: (None, True) for s in specs
    }
    assert found == {spec.name: [] for spec in specs}


def _nudge(value: float) -> float:
    return float(np.nextafter(value, np.inf))


FAULTS = {
    # What a faulty restore might write for one point, however small the difference.
    "cosine vector normalized": lambda p: {
        **p.vector,
        "dense": (np.asarray(p.vector["dense"]) / np.linalg.norm(p.vector["dense"])).tolist(),
    },
    "dense vector in float32": lambda p: {
        **p.vector,
        "dense": np.float32(p.vector["dense"]).astype(float).tolist(),
    },
    "one ulp in one value": lambda p: {
        **p.vector,
        "dense": [_nudge(p.vector["dense"][0]), *p.vector["dense"][1:]],
    },
    "multivector row dropped": lambda p: {**p.vector, "colbert": p.vector["colbert"][:-1]},
    "sparse vector lost": lambda p: {k: v for k, v in p.vector.items() if k != "keywords"},
}


class FaultyHandler(QdrantHandler):
    """A restore that writes one point otherwise than the backup holds it."""

    def __init__(self, client, store, fault):
        super().__init__(client, store)
        self.fault = fault

    def restore(self, manifest, name, marker):
        facts = super().restore(manifest, name, marker)
        [point] = [
            p
            for p in self.fault_points
            if len(p.vector["colbert"]) > 1 and "keywords" in p.vector and p.vector["dense"][0]
        ][:1]
        if self.fault == "payload 1 as 1.0":
            changed = models.PointStruct(id=point.id, vector=point.vector, payload={"n": 1.0})
        else:
            changed = models.PointStruct(
                id=point.id, vector=FAULTS[self.fault](point), payload=point.payload
            )
        self.client.upsert(name, [changed])
        self.changed = point.id
        return facts


@pytest.mark.parametrize("fault", [*FAULTS, "payload 1 as 1.0"])
def test_a_copy_that_differs_in_any_value_fails_verification(tmp_path, fault):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = ArtefactStore(str(tmp_path / "store"))
    [spec] = [s for s in corpus(6, count=40) if s.name == "mixed"]
    for point in spec.points:
        point.vector.setdefault("colbert", [[1.0] * 5, [0.5] * 5])
        point.vector.setdefault("keywords", models.SparseVector(indices=[3], values=[0.25]))
        point.payload = {"n": 1}
    spec.create(client)
    backup_qdrant_collection(
        client, "mixed", store, TargetPolicy(batch_size=7), server_url=None, api_key=None
    )
    handler = FaultyHandler(client, store, fault)
    handler.fault_points = spec.points
    evidence = restore(handler, store, RestoreRequest("qdrant", "mixed", DRILL), run_id="r")
    client.close()

    checks = {c.name: c for c in evidence.checks}
    assert checks["points_equal_backup"].passed is False
    assert f"point {handler.changed}: " in checks["points_equal_backup"].detail
    assert not evidence.verified and "does not match backup" in evidence.error
    # The backup itself is faithful to the source: only the copy is wrong.
    assert checks["point_fingerprints"].passed and checks["backup_checksums"].passed


def _restore_into(client, store, destination: str, run_id: str):
    request = RestoreRequest("qdrant", "memory", RESTORE, destination=destination)
    return restore(QdrantHandler(client, store), store, request, run_id=run_id)


def _corrupt_a_fingerprinted_row(store, manifest) -> None:
    sampled = manifest.details["point_fingerprints"]["points"][0]["id"]

    def alter(rows):
        row = next(r for r in rows if r["id_int"] == sampled)
        row["payload"] = json.dumps({"i": -1})

    _rewrite_points(store, manifest, alter)


def test_a_restore_failing_verification_leaves_an_absent_destination_absent(client, store):
    manifest = _backup(client, store)
    _corrupt_a_fingerprinted_row(store, manifest)
    evidence = _restore_into(client, store, "memory_restored", "run-absent")

    assert not evidence.verified and "does not match backup" in evidence.error
    assert evidence.facts["destination_before"] == "absent"
    assert evidence.facts["destination_after"] == ("absent, as before (the failed restore removed)")
    assert not client.collection_exists("memory_restored")
    assert "roll_back" in evidence.phases


def test_a_restore_failing_verification_puts_the_previous_content_back(tmp_path, client, store):
    manifest = _backup(client, store)
    # The destination holds something else: 12 points of its own, cosine raw values.
    client.create_collection(
        "live", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    client.upsert(
        "live",
        [models.PointStruct(id=i, vector=[i + 0.1] * 8, payload={"live": "ü"}) for i in range(12)],
    )
    _corrupt_a_fingerprinted_row(store, manifest)
    evidence = _restore_into(client, store, "live", "run-live")
    client.close()

    safety = evidence.safety_backup["backup_id"]
    assert evidence.facts["destination_before"] == {"points": 12}
    assert evidence.facts["destination_after"] == (
        f"as before: safety backup {safety} restored and verified"
    )
    assert not evidence.verified and "does not match backup" in evidence.error
    path = str(tmp_path / "qdrant")
    held = read_as_held(path, "live")
    assert sorted(held) == list(range(12))
    assert held[3] == (
        (("", tuple(float.hex(3.1) for _ in range(8))),),
        json.dumps({"live": "ü"}),
    )


# Against a real Qdrant server: opt-in (no server can run here). Read at import, because the
# session fixture hides every GSV_* variable from the tests themselves.
REAL_QDRANT_URL = os.environ.get("GSV_TEST_QDRANT_URL")
REAL_QDRANT_API_KEY = os.environ.get("GSV_TEST_QDRANT_API_KEY") or None


def _server_points(client: QdrantClient, name: str) -> dict:
    records, _ = client.scroll(name, limit=100_000, with_vectors=True, with_payload=True)
    found = {}
    for record in records:
        named = record.vector if isinstance(record.vector, dict) else {"": record.vector}
        vectors = tuple(sorted((n, exact(v)) for n, v in named.items() if v is not None))
        found[record.id] = (vectors, json.dumps(record.payload or {}, sort_keys=True))
    return found


@pytest.mark.skipif(
    not REAL_QDRANT_URL,
    reason="no real Qdrant server here: set GSV_TEST_QDRANT_URL (and GSV_TEST_QDRANT_API_KEY "
    "if it needs one) to round-trip every shape through one (DESIGN.md, Real parts in tests)",
)
def test_real_server_every_shape_exports_restores_and_verifies(tmp_path):
    client = QdrantClient(url=REAL_QDRANT_URL, api_key=REAL_QDRANT_API_KEY, timeout=120)
    store = ArtefactStore(str(tmp_path / "store"))
    prefix = f"gsv_shapes_{uuid.uuid4().hex[:6]}_"
    specs = corpus(41)
    handler = QdrantHandler(client, store, server_url=REAL_QDRANT_URL, api_key=REAL_QDRANT_API_KEY)
    try:
        for spec in specs:
            spec.name = prefix + spec.name
            spec.create(client)
            backup_qdrant_collection(
                client,
                spec.name,
                store,
                TargetPolicy(method="export", batch_size=7),
                server_url=REAL_QDRANT_URL,
                api_key=REAL_QDRANT_API_KEY,
            )
            request = RestoreRequest("qdrant", spec.name, RESTORE, destination=f"{spec.name}_r")
            evidence = restore(handler, store, request, run_id="run-server")
            assert evidence.verified and evidence.error is None, (spec.name, evidence.error)
            assert (
                differences(
                    _server_points(client, spec.name), _server_points(client, f"{spec.name}_r")
                )
                == []
            ), spec.name
    finally:
        for collection in client.get_collections().collections:
            if collection.name.startswith(prefix):
                client.delete_collection(collection.name)
        client.close()
