"""A FAKE of a Qdrant server's collection-snapshot REST endpoints, on 127.0.0.1.

No Qdrant server binary can be installed here, so the server-only snapshot API is tested against
this recorded contract instead (an opt-in suite runs against a real server: GSV_TEST_QDRANT_URL).

The contract is Qdrant v1.16.3's, from the qdrant/qdrant repository at tag v1.16.3:
  docs/redoc/v1.16.x/openapi.json          paths, SnapshotDescription, CollectionClusterInfo,
                                           LocalShardInfo, SnapshotPriority, ErrorResponse
  src/actix/helpers.rs                     the envelope {"result", "status": "ok", "time"};
                                           wait=false -> HTTP 202 {"status": "accepted", "time"};
                                           errors {"status": {"error": "..."}, "time"}
  src/actix/auth.rs, src/common/auth/mod.rs
                                           `api-key` header (or `Authorization: Bearer`); a
                                           missing or wrong key -> 401 with a plain-text body;
                                           `/` is exempt
  src/actix/api/snapshot_api.rs            upload: multipart field `snapshot`, query `priority`,
                                           `checksum` (checked before recovery: 400 on mismatch)
  lib/collection/src/collection/collection_ops.rs
                                           /cluster answers without distributed mode too:
                                           peer_id, shard_count, local_shards, remote_shards,
                                           shard_transfers
  lib/collection/src/common/snapshots_manager.rs
                                           a snapshot is listed only once complete, checksum first
  lib/collection/src/collection/snapshots.rs
                                           names `<collection>-<peer id>-<UTC time>.snapshot`
The same shapes hold in docs/redoc/v1.15.x and master (1.19) openapi.json.

Points, for what backups and DR drills read back (the shapes built with qdrant-client's own
models): each local shard holds 1000 fixed points (4-dim unit vectors, cosine, small payloads)
served by scroll, retrieve (POST /points), count and query (exact top-k). An upload whose
checksum is that of a snapshot this fake created recovers that snapshot's collection under the
uploaded name, with the same points; GET /collections, /exists, PATCH (metadata) and DELETE of
a collection complete what a drill does with its scratch copy.

Run standalone (the benchmark does, so the server's memory is not the client's):
    python -m tests.services.qdrant_fake --port 6333 --collection agents=0,1 --snapshot-size 1000000
"""

import argparse
import hashlib
import json
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

QDRANT_VERSION = "1.16.3"
BLOCK = 1 << 20
PRIORITIES = ("no_sync", "snapshot", "replica")


def snapshot_chunks(name: str, size: int) -> Iterator[bytes]:
    """The deterministic pseudo-random content of snapshot `name`, chunk by chunk.

    One random block per snapshot, rotated differently for every chunk: cheap to produce at
    gigabytes per second, and any reordered, lost or altered chunk changes the SHA-256.
    """
    block = random.Random(name).randbytes(BLOCK)
    sent, index = 0, 0
    while sent < size:
        shift = (index * 7919) % BLOCK
        chunk = block[shift:] + block[:shift]
        chunk = chunk[: size - sent]
        yield chunk
        sent += len(chunk)
        index += 1


@dataclass
class Faults:
    """What to get wrong on purpose; set them on `fake.faults` before the call under test."""

    wrong_checksum: bool = False  # snapshot descriptions report a checksum of other bytes
    no_checksum: bool = False  # descriptions omit the checksum (as with object-storage snapshots)
    drop_download_after: int | None = None  # bytes sent before the connection is cut
    download_not_found: bool = False  # the snapshot vanished: downloads answer 404
    delete_fails: bool = False  # deleting a snapshot answers 500


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass(frozen=True)
class Snapshot:
    collection: str
    name: str
    size: int
    checksum: str  # the true SHA-256 of the content
    creation_time: str


@dataclass(frozen=True)
class Upload:
    collection: str
    query: dict[str, str]
    filename: str
    size: int
    sha256: str


@dataclass
class _Collection:
    local_shards: list[int]
    shard_count: int
    remote_shards: list[tuple[int, int]] = field(default_factory=list)  # (shard id, peer id)
    points_of: str = ""  # whose points it holds: itself, or the collection it was recovered from
    metadata: dict[str, Any] = field(default_factory=dict)


POINTS_PER_SHARD = 1000


def fake_points(collection: str, shards: list[int]) -> list[dict[str, Any]]:
    """The fixed points of a collection: ids shard*1000+i, 4-dim unit vectors, payloads."""
    rng = random.Random(f"points:{collection}")
    points = []
    for shard in shards:
        for i in range(POINTS_PER_SHARD):
            vector = [rng.gauss(0, 1) for _ in range(4)]
            norm = sum(v * v for v in vector) ** 0.5
            points.append(
                {
                    "id": shard * POINTS_PER_SHARD + i,
                    "vector": [v / norm for v in vector],
                    "payload": {"shard": shard, "i": i},
                }
            )
    return points


class FakeQdrantSnapshotServer:
    """A fake Qdrant node (not a real server) that serves collection snapshots over HTTP.

    `collections` maps each collection to the shard ids this node holds locally (empty: the
    collection exists in the cluster but this node holds none of it). Snapshots are
    `snapshot_size` bytes of deterministic content, generated while streamed. A snapshot
    requested with wait=false appears `snapshot_delay` seconds later. `calls`, `created` and
    `uploads` record what clients did.
    """

    def __init__(
        self,
        collections: dict[str, list[int]],
        *,
        api_key: str | None = None,
        read_only_api_key: str | None = None,
        peer_id: int = 5_017_632_219_481_377,
        shard_count: int | None = None,
        remote_shards: dict[str, list[tuple[int, int]]] | None = None,
        snapshot_size: int = 256 * 1024,
        snapshot_delay: float = 0.0,
        port: int = 0,
    ):
        self.collections = {
            name: _Collection(
                local_shards=sorted(shards),
                shard_count=shard_count or max(len(shards), 1),
                remote_shards=list((remote_shards or {}).get(name, [])),
            )
            for name, shards in collections.items()
        }
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.peer_id = peer_id
        self.snapshot_size = snapshot_size
        self.snapshot_delay = snapshot_delay
        self.faults = Faults()
        self.calls: list[Call] = []
        self.created: list[Snapshot] = []
        self.uploads: list[Upload] = []
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeQdrantSnapshotServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "FakeQdrantSnapshotServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # What tests look at

    def snapshot_names(self, collection: str) -> list[str]:
        """Snapshots currently on this node's disk."""
        with self._lock:
            return sorted(n for c, n in self._snapshots if c == collection)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        """Recorded calls of `method` whose path matches the regular expression `pattern`."""
        with self._lock:
            return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    # Behaviour

    def _description(self, snapshot: Snapshot) -> dict[str, Any]:
        description: dict[str, Any] = {
            "name": snapshot.name,
            "creation_time": snapshot.creation_time,
            "size": snapshot.size,
        }
        if self.faults.wrong_checksum:
            description["checksum"] = hashlib.sha256(b"other bytes").hexdigest()
        elif not self.faults.no_checksum:
            description["checksum"] = snapshot.checksum
        return description

    def _create(self, collection: str) -> Snapshot:
        now = datetime.now(UTC)
        name = f"{collection}-{self.peer_id}-{now:%Y-%m-%d-%H-%M-%S}.snapshot"
        digest = hashlib.sha256()
        for chunk in snapshot_chunks(name, self.snapshot_size):
            digest.update(chunk)
        snapshot = Snapshot(
            collection=collection,
            name=name,
            size=self.snapshot_size,
            checksum=digest.hexdigest(),
            creation_time=now.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        with self._lock:
            self._snapshots[(collection, name)] = snapshot  # same second, same name: replaced
            self.created.append(snapshot)
        return snapshot

    def _create_later(self, collection: str) -> None:
        timer = threading.Timer(self.snapshot_delay, self._create, args=(collection,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _access(self, handler: "_Handler") -> str | None:
        """ "rw", "ro", or None when the request must be refused with 401."""
        if self.api_key is None:
            return "rw"
        given = handler.headers.get("api-key")
        if given is None:
            authorization = handler.headers.get("Authorization", "")
            given = authorization.removeprefix("Bearer ") if authorization else None
        if given == self.api_key:
            return "rw"
        if self.read_only_api_key is not None and given == self.read_only_api_key:
            return "ro"
        return None

    def _handle(self, handler: "_Handler", method: str) -> None:
        started = time.perf_counter()
        parts = urlsplit(handler.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        reply = _Reply(handler, started)
        try:
            self._route(handler, reply, method, path, query)
        finally:
            with self._lock:
                self.calls.append(Call(method, path, query, reply.status))

    def points(self, collection: str) -> list[dict[str, Any]]:
        info = self.collections[collection]
        return fake_points(info.points_of or collection, info.local_shards)

    def _points_route(
        self, handler: "_Handler", reply: "_Reply", collection: str, rest: str
    ) -> None:
        """POST /points (retrieve), /points/scroll, /points/count, /points/query."""
        request = json.loads(b"".join(handler.body()) or b"{}")
        points = self.points(collection)

        def record(point: dict, score: float | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"id": point["id"]}
            if score is not None:
                out.update(score=score, version=0)
            if request.get("with_payload"):
                out["payload"] = point["payload"]
            if request.get("with_vector"):
                out["vector"] = point["vector"]
            return out

        if rest == "/points":
            wanted = set(request["ids"])
            reply.ok([record(p) for p in points if p["id"] in wanted])
        elif rest == "/points/count":
            reply.ok({"count": len(points)})
        elif rest == "/points/scroll":
            start = request.get("offset") or 0
            limit = request.get("limit") or 10
            page = [p for p in points if p["id"] >= start][: limit + 1]
            following = page[limit]["id"] if len(page) > limit else None
            reply.ok({"points": [record(p) for p in page[:limit]], "next_page_offset": following})
        elif rest == "/points/query":
            vector = request["query"]
            if isinstance(vector, dict):
                vector = vector["nearest"]
            scored = sorted(
                ((sum(a * b for a, b in zip(p["vector"], vector, strict=True)), p) for p in points),
                key=lambda pair: (-pair[0], pair[1]["id"]),
            )
            limit = request.get("limit") or 10
            reply.ok({"points": [record(p, score) for score, p in scored[:limit]]})
        else:
            reply.text(404, "")

    def _route(
        self, handler: "_Handler", reply: "_Reply", method: str, path: str, query: dict
    ) -> None:
        if path == "/" and method == "GET":
            commit = "fake0000000000000000000000000000000000000"
            reply.raw_json(
                200,
                {
                    "title": "qdrant - vector search engine",
                    "version": QDRANT_VERSION,
                    "commit": commit,
                },
            )
            return
        access = self._access(handler)
        if access is None:
            handler.drain_body()
            message = (
                "Invalid API key or JWT"
                if handler.headers.get("api-key") or handler.headers.get("Authorization")
                else "Must provide an API key or an Authorization bearer token"
            )
            reply.text(401, message)
            return
        if path == "/collections" and method == "GET":
            handler.drain_body()
            reply.ok({"collections": [{"name": name} for name in sorted(self.collections)]})
            return
        match = re.fullmatch(r"/collections/([^/]+)(/.*)?", path)
        if not match:
            handler.drain_body()
            reply.text(404, "")
            return
        collection, rest = unquote(match.group(1)), match.group(2) or ""
        is_upload = method == "POST" and rest == "/snapshots/upload"
        if method == "POST" and rest.startswith("/points") and collection in self.collections:
            self._points_route(handler, reply, collection, rest)
            return
        if method == "PATCH" and rest == "" and collection in self.collections:
            body = json.loads(b"".join(handler.body()) or b"{}")
            self.collections[collection].metadata.update(body.get("metadata") or {})
            reply.ok(True)
            return
        if not is_upload:
            handler.drain_body()
        if is_upload:
            self._upload(handler, reply, collection, query, access)
            return
        if method == "GET" and rest == "/exists":
            reply.ok({"exists": collection in self.collections})
            return
        if collection not in self.collections:
            error = f"Not found: Collection `{collection}` doesn't exist!"
            # The download handler answers errors as plain text, the others as JSON.
            if method == "GET" and rest.startswith("/snapshots/"):
                reply.text(404, error)
            else:
                reply.error(404, error)
            return
        info = self.collections[collection]
        if method == "GET" and rest == "":
            reply.ok(_collection_info(info))
            return
        if method == "DELETE" and rest == "":
            with self._lock:
                del self.collections[collection]
            reply.ok(True)
            return
        if method == "GET" and rest == "/cluster":
            reply.ok(
                {
                    "peer_id": self.peer_id,
                    "shard_count": info.shard_count,
                    "local_shards": [
                        {"shard_id": s, "points_count": 1000, "state": "Active"}
                        for s in info.local_shards
                    ],
                    "remote_shards": [
                        {"shard_id": s, "peer_id": p, "state": "Active"}
                        for s, p in info.remote_shards
                    ],
                    "shard_transfers": [],
                }
            )
        elif method == "GET" and rest == "/snapshots":
            with self._lock:
                mine = [s for (c, _), s in sorted(self._snapshots.items()) if c == collection]
            reply.ok([self._description(s) for s in mine])
        elif method == "POST" and rest == "/snapshots":
            if access != "rw":
                reply.error(403, f"Forbidden: Write access to collection {collection} is required")
            elif query.get("wait", "true") == "false":
                self._create_later(collection)
                reply.accepted()
            else:
                time.sleep(self.snapshot_delay)
                reply.ok(self._description(self._create(collection)))
        elif (match := re.fullmatch(r"/snapshots/([^/]+)", rest)) and method in ("GET", "DELETE"):
            name = unquote(match.group(1))
            with self._lock:
                snapshot = self._snapshots.get((collection, name))
            if method == "GET":
                if snapshot is None or self.faults.download_not_found:
                    reply.text(404, f"Not found: Snapshot {name} not found")
                else:
                    self._stream(handler, reply, snapshot)
            elif access != "rw":
                reply.error(403, f"Forbidden: Write access to collection {collection} is required")
            elif self.faults.delete_fails:
                reply.error(500, f"Service internal error: cannot remove {name}")
            elif snapshot is None:
                reply.error(404, f"Not found: Snapshot {name} not found")
            else:
                with self._lock:
                    del self._snapshots[(collection, name)]
                reply.ok(True)
        else:
            reply.text(404, "")

    def _stream(self, handler: "_Handler", reply: "_Reply", snapshot: Snapshot) -> None:
        reply.status = 200
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(snapshot.size))
        handler.send_header("Content-Disposition", f'attachment; filename="{snapshot.name}"')
        handler.end_headers()
        limit = self.faults.drop_download_after
        sent = 0
        try:
            for chunk in snapshot_chunks(snapshot.name, snapshot.size):
                if limit is not None and sent + len(chunk) > limit:
                    handler.wfile.write(chunk[: limit - sent])
                    handler.wfile.flush()
                    handler.close_connection = True
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    return
                handler.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _upload(
        self, handler: "_Handler", reply: "_Reply", collection: str, query: dict, access: str
    ) -> None:
        """Qdrant's upload: check the query, hash the `snapshot` part, compare `checksum`."""
        if access != "rw":
            handler.drain_body()
            reply.error(403, "Forbidden: Global manage access is required")
            return
        priority = query.get("priority")
        if priority is not None and priority not in PRIORITIES:
            handler.drain_body()
            reply.text(400, f"Query deserialize error: unknown variant `{priority}`")
            return
        boundary = re.search(r"boundary=\"?([^\";]+)", handler.headers.get("Content-Type", ""))
        if not boundary:
            handler.drain_body()
            reply.text(400, "Content type error")
            return
        try:
            filename, size, digest = _read_multipart_file(handler.body(), boundary.group(1))
        except ValueError as exc:
            handler.close_connection = True  # what is left of the body is not read
            reply.text(400, f"Multipart error: {exc}")
            return
        expected = query.get("checksum")
        if expected is not None and digest != expected.lower():
            # Qdrant's message names the computed digest "expected" and the given one "actual".
            reply.error(400, f"Checksum mismatch: expected {digest}, actual {expected}")
            return
        with self._lock:
            self.uploads.append(Upload(collection, dict(query), filename, size, digest))
            # Recovering a snapshot of ours: the collection it was taken of, under this name.
            source = next((c.collection for c in self.created if c.checksum == digest), None)
            if source is not None and source in self.collections:
                taken = self.collections[source]
                self.collections[collection] = _Collection(
                    local_shards=list(taken.local_shards),
                    shard_count=taken.shard_count,
                    points_of=taken.points_of or source,
                )
        if query.get("wait", "true") == "false":
            reply.accepted()
        else:
            reply.ok(True)


class _Reply:
    """Qdrant's response shapes; remembers the status for the call record."""

    def __init__(self, handler: "_Handler", started: float):
        self.handler = handler
        self.started = started
        self.status = 0

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 6)

    def raw_json(self, status: int, obj: Any) -> None:
        self._send(status, "application/json", json.dumps(obj).encode())

    def ok(self, result: Any) -> None:
        self.raw_json(200, {"result": result, "status": "ok", "time": self._elapsed()})

    def accepted(self) -> None:
        self.raw_json(202, {"status": "accepted", "time": self._elapsed()})

    def error(self, status: int, message: str) -> None:
        self.raw_json(status, {"status": {"error": message}, "time": self._elapsed()})

    def text(self, status: int, message: str) -> None:
        self._send(status, "text/plain; charset=utf-8", message.encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", content_type)
        self.handler.send_header("Content-Length", str(len(body)))
        self.handler.end_headers()
        self.handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qdrant-fake"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `calls`
        pass

    def body(self) -> Iterator[bytes]:
        """The request body as it arrives, plain or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline()
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = length
                while left:
                    data = self.rfile.read(min(left, BLOCK))
                    if not data:
                        raise ValueError("body ended early")
                    left -= len(data)
                    yield data
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, BLOCK))
                if not data:
                    raise ValueError("body ended early")
                left -= len(data)
                yield data

    def drain_body(self) -> None:
        for _ in self.body():
            pass

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")  # type: ignore[attr-defined]

    def do_DELETE(self) -> None:
        self.server.fake._handle(self, "DELETE")  # type: ignore[attr-defined]

    def do_PATCH(self) -> None:
        self.server.fake._handle(self, "PATCH")  # type: ignore[attr-defined]


def _read_multipart_file(body: Iterator[bytes], boundary: str) -> tuple[str, int, str]:
    """Stream through a multipart body: the `snapshot` part's filename, size and SHA-256.

    Holds at most one network read plus a boundary's length in memory.
    """
    opening = b"--" + boundary.encode()
    closing = b"\r\n" + opening
    buffer = b""
    chunks = iter(body)

    def more() -> bool:
        nonlocal buffer
        data = next(chunks, b"")
        buffer += data
        return bool(data)

    while b"\r\n\r\n" not in buffer:
        if not more():
            raise ValueError("no part headers")
    headers, buffer = buffer.split(b"\r\n\r\n", 1)
    if not headers.startswith(opening):
        raise ValueError("body does not start with the boundary")
    disposition = headers.decode("utf-8", "replace")
    if 'name="snapshot"' not in disposition:
        raise ValueError("no `snapshot` field")
    found = re.search(r'filename="([^"]*)"', disposition)
    filename = found.group(1) if found else ""
    digest, size = hashlib.sha256(), 0
    while True:
        end = buffer.find(closing)
        if end >= 0:
            digest.update(buffer[:end])
            size += end
            rest = buffer[end + len(closing) :]
            while len(rest) < 2 and more():
                rest = buffer[end + len(closing) :]
            if not rest.startswith(b"--"):
                raise ValueError("only one part is expected")
            for _ in chunks:  # the epilogue
                pass
            return filename, size, digest.hexdigest()
        keep = len(closing) - 1  # a boundary may straddle two reads
        if len(buffer) > keep:
            digest.update(buffer[:-keep])
            size += len(buffer) - keep
            buffer = buffer[-keep:]
        if not more():
            raise ValueError("the closing boundary is missing")


def _collection_info(info: "_Collection") -> dict[str, Any]:
    """GET /collections/{name}: built with qdrant-client's own CollectionInfo model, so the shape
    is the one the client parses (a 4-dim cosine collection, 1000 points per local shard)."""
    from qdrant_client.http import models

    return models.CollectionInfo(
        status=models.CollectionStatus.GREEN,
        optimizer_status=models.OptimizersStatusOneOf.OK,
        points_count=1000 * len(info.local_shards),
        segments_count=len(info.local_shards),
        config=models.CollectionConfig(
            params=models.CollectionParams(
                vectors=models.VectorParams(size=4, distance=models.Distance.COSINE),
                shard_number=info.shard_count,
            ),
            metadata=info.metadata or None,
            hnsw_config=models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000),
            optimizer_config=models.OptimizersConfig(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=5,
            ),
            wal_config=models.WalConfig(wal_capacity_mb=32, wal_segments_ahead=0),
        ),
        payload_schema={},
    ).model_dump(mode="json", exclude_none=True)


def _parse_collection(text: str) -> tuple[str, list[int]]:
    name, _, shards = text.partition("=")
    return name, [int(s) for s in shards.split(",") if s]


def main() -> None:
    parser = argparse.ArgumentParser(description="A FAKE Qdrant node serving snapshots.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--collection", action="append", type=_parse_collection, default=[])
    parser.add_argument("--snapshot-size", type=int, default=256 * 1024)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    fake = FakeQdrantSnapshotServer(
        dict(args.collection),
        api_key=args.api_key,
        snapshot_size=args.snapshot_size,
        port=args.port,
    )
    print(f"fake Qdrant listening on {fake.url}", flush=True)
    fake._server.serve_forever()


if __name__ == "__main__":
    main()
