import hashlib
import io
import os
import traceback
import uuid

import pytest
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.backups.qdrant_snapshot import (
    SnapshotError,
    node_label,
    snapshot_collection,
    upload_snapshot,
)
from gsv_pipelines.lib.core.processes import free_port
from gsv_pipelines.lib.core.store import ArtefactStore
from tests.services.qdrant_fake import FakeQdrantSnapshotServer, snapshot_chunks

API_KEY = "gsv-test-qdrant-key-5b7e2f"
FOLDER = "qdrant/agents/20261127T031500Z"
SNAPSHOT_CALL = r"/collections/agents/snapshots/[^/]+"


@pytest.fixture
def store(tmp_path) -> ArtefactStore:
    return ArtefactStore(str(tmp_path / "store"))


@pytest.fixture
def fake():
    with FakeQdrantSnapshotServer({"agents": [0]}, api_key=API_KEY) as server:
        yield server


def _snapshot(store: ArtefactStore, *urls: str, **kwargs):
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("poll_seconds", 0.02)
    return snapshot_collection("agents", store, FOLDER, node_urls=list(urls), **kwargs)


def _index(calls, method: str, pattern: str, fake: FakeQdrantSnapshotServer) -> int:
    wanted = fake.calls_to(method, pattern)[0]
    return calls.index(wanted)


def test_single_node_copy_is_verified_then_deleted_from_the_server(fake, store):
    [copy] = _snapshot(store, fake.url)

    [created] = fake.created
    assert copy.name == created.name
    assert copy.key == f"{FOLDER}/{node_label(fake.url)}-{created.name}"
    assert (copy.size, copy.sha256) == (created.size, created.checksum)
    assert copy.shards == {0: 1000}
    assert copy.node_url == fake.url
    assert store.hash(copy.key).sha256 == created.checksum
    assert store.glob(f"{FOLDER}/*") == [copy.key]
    # Created in the background, downloaded, and only then deleted on the server.
    assert fake.calls_to("POST", r"/collections/agents/snapshots")[0].query == {"wait": "false"}
    calls = fake.calls
    assert _index(calls, "GET", SNAPSHOT_CALL, fake) < _index(calls, "DELETE", SNAPSHOT_CALL, fake)
    assert fake.snapshot_names("agents") == []


def test_only_nodes_holding_shards_are_snapshotted(store):
    with (
        FakeQdrantSnapshotServer(
            {"agents": [0, 2]}, api_key=API_KEY, peer_id=11, shard_count=4
        ) as first,
        FakeQdrantSnapshotServer(
            {"agents": []},
            api_key=API_KEY,
            peer_id=22,
            shard_count=4,
            remote_shards={"agents": [(0, 11), (1, 33), (2, 11), (3, 33)]},
        ) as empty,
        FakeQdrantSnapshotServer(
            {"agents": [1, 3]}, api_key=API_KEY, peer_id=33, shard_count=4
        ) as third,
    ):
        copies = _snapshot(store, first.url, empty.url, third.url)

        assert [(c.node_url, c.shards) for c in copies] == [
            (first.url, {0: 1000, 2: 1000}),
            (third.url, {1: 1000, 3: 1000}),
        ]
        assert len({c.key for c in copies}) == 2
        assert empty.calls_to("GET", r"/collections/agents/cluster")
        assert not empty.calls_to("POST", r"/collections/agents/snapshots")
        assert not empty.created
        for node, copy in ((first, copies[0]), (third, copies[1])):
            assert copy.name.startswith(f"agents-{node.peer_id}-")
            assert store.hash(copy.key).sha256 == node.created[0].checksum
            assert node.snapshot_names("agents") == []


def test_no_node_holding_shards_is_an_error(store):
    with FakeQdrantSnapshotServer({"agents": []}, api_key=API_KEY) as empty:
        with pytest.raises(SnapshotError, match="no node holds shards of collection `agents`"):
            _snapshot(store, empty.url)
        assert not empty.created


def test_snapshot_created_in_the_background_is_polled_for(store):
    with FakeQdrantSnapshotServer({"agents": [0]}, api_key=API_KEY, snapshot_delay=0.3) as fake:
        [copy] = _snapshot(store, fake.url, poll_seconds=0.05)

        assert copy.sha256 == fake.created[0].checksum
        assert len(fake.calls_to("GET", r"/collections/agents/snapshots")) >= 3
        assert fake.snapshot_names("agents") == []


def test_checksum_mismatch_removes_the_copy_and_the_server_snapshot(fake, store):
    fake.faults.wrong_checksum = True

    with pytest.raises(SnapshotError, match="does not match") as caught:
        _snapshot(store, fake.url)

    assert "checksum" in str(caught.value)
    assert store.glob(f"{FOLDER}/*") == []
    assert fake.calls_to("DELETE", SNAPSHOT_CALL)
    assert fake.snapshot_names("agents") == []


def test_download_cut_off_midway_leaves_nothing_behind(store):
    with FakeQdrantSnapshotServer(
        {"agents": [0]}, api_key=API_KEY, snapshot_size=3 * 1024 * 1024
    ) as fake:
        fake.faults.drop_download_after = 1_500_000
        with pytest.raises(SnapshotError, match=r"broke off|does not match"):
            _snapshot(store, fake.url)

        assert store.glob(f"{FOLDER}/*") == []
        assert fake.snapshot_names("agents") == []


def test_missing_server_checksum_is_refused(fake, store):
    fake.faults.no_checksum = True

    with pytest.raises(SnapshotError, match="reports no checksum"):
        _snapshot(store, fake.url)

    assert store.glob(f"{FOLDER}/*") == []
    assert fake.snapshot_names("agents") == []


def test_failure_on_a_later_node_removes_earlier_copies(store):
    with (
        FakeQdrantSnapshotServer({"agents": [0]}, api_key=API_KEY, peer_id=1) as good,
        FakeQdrantSnapshotServer({"agents": [1]}, api_key=API_KEY, peer_id=2) as bad,
    ):
        bad.faults.wrong_checksum = True
        with pytest.raises(SnapshotError, match="does not match"):
            _snapshot(store, good.url, bad.url)

        assert store.glob(f"{FOLDER}/*") == []
        assert good.snapshot_names("agents") == [] and bad.snapshot_names("agents") == []


def test_server_snapshot_not_deleted_is_an_error(fake, store):
    fake.faults.delete_fails = True

    with pytest.raises(SnapshotError, match="still uses the server's disk"):
        _snapshot(store, fake.url)

    assert store.glob(f"{FOLDER}/*") == []


def _all_text(exc: BaseException) -> str:
    """Every message of the exception, its notes and its chain (not the source lines)."""
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts.extend(traceback.format_exception_only(seen))
        texts.extend(getattr(seen, "__notes__", []))
        seen = seen.__cause__ or seen.__context__
    return "".join(texts)


@pytest.mark.parametrize("key", ["wrong-key-9f1c3a7d", None])
def test_wrong_or_missing_api_key_is_a_clear_error_without_the_key(fake, store, key):
    with pytest.raises(SnapshotError, match="HTTP 401") as caught:
        _snapshot(store, fake.url, api_key=key)

    text = _all_text(caught.value)
    assert "API key" in text
    assert API_KEY not in text
    if key:
        assert key not in text
    assert not fake.created


def test_read_only_key_is_refused_clearly(store):
    with FakeQdrantSnapshotServer(
        {"agents": [0]}, api_key=API_KEY, read_only_api_key="ro-key-0d4e61"
    ) as fake:
        with pytest.raises(SnapshotError, match="HTTP 403") as caught:
            _snapshot(store, fake.url, api_key="ro-key-0d4e61")

        assert "ro-key-0d4e61" not in _all_text(caught.value)
        assert "read-write" in str(caught.value)


def test_missing_collection_is_a_clear_error(fake, store):
    with pytest.raises(SnapshotError, match="HTTP 404") as caught:
        snapshot_collection("ghosts", store, FOLDER, node_urls=[fake.url], api_key=API_KEY)

    assert "collection `ghosts`" in str(caught.value)
    assert API_KEY not in _all_text(caught.value)


def test_unreachable_node_is_a_clear_error(store):
    url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(SnapshotError, match="cannot reach Qdrant node") as caught:
        _snapshot(store, url)

    assert url in str(caught.value)
    assert API_KEY not in _all_text(caught.value)


def test_snapshot_not_ready_in_time_is_a_timeout_error(store):
    with FakeQdrantSnapshotServer({"agents": [0]}, api_key=API_KEY, snapshot_delay=5) as fake:
        with pytest.raises(SnapshotError, match=r"not ready within 0\.3s"):
            _snapshot(store, fake.url, timeout_seconds=0.3, poll_seconds=0.05)

        assert store.glob(f"{FOLDER}/*") == []


def test_upload_streams_the_snapshot_with_priority_and_checksum(fake, store):
    stored = store.write_stream("snap/agents.snapshot", snapshot_chunks("upload", 2_500_000))

    upload_snapshot(
        fake.url,
        API_KEY,
        "agents",
        store.iter_chunks(stored.key),
        checksum=stored.sha256,
        size=stored.size,
    )

    [upload] = fake.uploads
    assert upload.collection == "agents"
    assert upload.query == {"priority": "snapshot", "checksum": stored.sha256}
    assert (upload.size, upload.sha256) == (stored.size, stored.sha256)
    assert upload.filename.endswith(".snapshot")


def test_upload_of_unknown_length_is_sent_chunked(fake):
    data = b"".join(snapshot_chunks("chunked", 1_234_567))
    checksum = hashlib.sha256(data).hexdigest()

    upload_snapshot(
        fake.url,
        API_KEY,
        "agents",
        iter([data[:1000], data[1000:]]),
        checksum=checksum,
        priority="replica",
    )
    upload_snapshot(fake.url, API_KEY, "agents", io.BytesIO(data), checksum=checksum)
    upload_snapshot(fake.url, API_KEY, "agents", data, checksum=checksum, priority="no_sync")

    assert [(u.sha256, u.size, u.query["priority"]) for u in fake.uploads] == [
        (checksum, len(data), "replica"),
        (checksum, len(data), "snapshot"),
        (checksum, len(data), "no_sync"),
    ]


def test_upload_refused_by_the_server_is_an_error(fake):
    wrong = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(SnapshotError, match=r"HTTP 400.*Checksum mismatch"):
        upload_snapshot(fake.url, API_KEY, "agents", io.BytesIO(b"snapshot"), checksum=wrong)
    with pytest.raises(SnapshotError, match="HTTP 401"):
        upload_snapshot(fake.url, "nope-key", "agents", io.BytesIO(b"x"), checksum=wrong)
    with pytest.raises(SnapshotError, match="priority"):
        upload_snapshot(fake.url, API_KEY, "agents", b"", checksum=wrong, priority="newest")
    assert not fake.uploads


def test_fake_answers_in_the_shapes_qdrant_client_parses():
    """The recorded contract, read back through qdrant-client's own models."""
    fake = FakeQdrantSnapshotServer({"agents": [0]}).start()
    client = QdrantClient(url=fake.url, check_compatibility=False)
    try:
        assert client.create_snapshot("agents", wait=False) is None
        description = client.create_snapshot("agents", wait=True)
        assert isinstance(description, models.SnapshotDescription)
        assert description.checksum == fake.created[-1].checksum
        assert description.name in [s.name for s in client.list_snapshots("agents")]
        info = client.http.distributed_api.collection_cluster_info("agents").result
        assert [s.shard_id for s in info.local_shards] == [0]
        assert info.peer_id == fake.peer_id
        assert client.delete_snapshot("agents", description.name) is True
    finally:
        client.close()
        fake.stop()


# Against a real Qdrant server: opt-in. Read at import, because the session fixture hides every
# GSV_* variable from the tests themselves.
REAL_QDRANT_URL = os.environ.get("GSV_TEST_QDRANT_URL")
REAL_QDRANT_API_KEY = os.environ.get("GSV_TEST_QDRANT_API_KEY") or None


@pytest.mark.skipif(
    not REAL_QDRANT_URL,
    reason="no real Qdrant server here: set GSV_TEST_QDRANT_URL (and GSV_TEST_QDRANT_API_KEY "
    "if it needs one) to run the snapshot suite against one (DESIGN.md, Real parts in tests)",
)
def test_real_server_snapshot_round_trip(store):
    assert REAL_QDRANT_URL
    client = QdrantClient(url=REAL_QDRANT_URL, api_key=REAL_QDRANT_API_KEY, timeout=120)
    name = f"gsv-snapshot-test-{uuid.uuid4().hex[:8]}"
    restored = f"{name}-restored"
    try:
        client.create_collection(
            name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
        )
        client.upsert(
            name,
            points=[
                models.PointStruct(id=i, vector=[i, 1.0, 0.5, -i], payload={"i": i})
                for i in range(50)
            ],
            wait=True,
        )

        copies = snapshot_collection(
            name,
            store,
            FOLDER,
            node_urls=[REAL_QDRANT_URL],
            api_key=REAL_QDRANT_API_KEY,
            timeout_seconds=300,
            poll_seconds=0.5,
        )

        assert copies and all(c.size > 0 and c.shards for c in copies)
        for copy in copies:
            assert store.hash(copy.key).sha256 == copy.sha256
        left = {s.name for s in client.list_snapshots(name)}
        assert not left & {c.name for c in copies}
        upload_snapshot(
            REAL_QDRANT_URL,
            REAL_QDRANT_API_KEY,
            restored,
            store.iter_chunks(copies[0].key),
            checksum=copies[0].sha256,
            size=copies[0].size,
        )
        assert client.count(restored, exact=True).count == 50
    finally:
        for collection in (name, restored):
            client.delete_collection(collection)
        client.close()
