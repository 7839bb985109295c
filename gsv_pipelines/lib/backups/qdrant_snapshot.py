"""The "snapshot" backup of a Qdrant collection on a Qdrant server, and the upload that restores it.

A collection snapshot is taken per node: each node archives only the shards it holds. So every
node is asked which shards it holds locally, and only those holding some are snapshotted (through
a load balancer a request can land on a node without shards and yield an empty snapshot). Each
snapshot is created in the background, streamed into the store, checked against the SHA-256 the
server reports, and only then deleted from the server's disk.

Embedded Qdrant (qdrant-client's local mode) has no snapshots: it is backed up by export.
REST contract: Qdrant 1.15-1.19 (qdrant/qdrant docs/redoc/v1.16.x/openapi.json and the server's
src/actix handlers at v1.16.3; tests/services/qdrant_fake.py lists the details relied on).
"""

import contextlib
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import requests

from gsv_pipelines.lib.core.store import ArtefactStore, StoredFile

PRIORITIES = ("no_sync", "snapshot", "replica")
CONNECT_SECONDS = 10.0
# How long a server may stay silent in the middle of one request before it counts as stalled.
STALL_SECONDS = 120.0
UPLOAD_CHUNK = 1 << 20


class SnapshotError(RuntimeError):
    """A snapshot could not be taken, copied, verified or uploaded."""


@dataclass(frozen=True)
class NodeSnapshot:
    """One node's snapshot of a collection, copied into the store and verified."""

    node_url: str
    name: str  # the snapshot's name on the server
    key: str  # where the copy is in the store
    size: int
    sha256: str
    # The shards this node held locally (hence the ones the snapshot holds): id -> points.
    shards: dict[int, int]


def node_label(node_url: str) -> str:
    """A file-name-safe name for a node: `http://qdrant-0.qdrant:6333` -> `qdrant-0.qdrant-6333`."""
    parts = urlsplit(node_url)
    where = (parts.hostname or "") + (f"-{parts.port}" if parts.port else "") + parts.path
    return re.sub(r"[^A-Za-z0-9.]+", "-", where).strip("-") or "node"


def _public_url(node_url: str) -> str:
    """The node's URL for messages: without any user:password part."""
    parts = urlsplit(node_url.rstrip("/"))
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


class _Node:
    """One Qdrant node's REST API, with errors turned into SnapshotErrors free of the API key."""

    def __init__(self, session: requests.Session, url: str, api_key: str | None, collection: str):
        self.session = session
        self.url = url.rstrip("/")
        self.shown = _public_url(url)
        self.api_key = api_key
        self.collection = collection
        self.base = f"/collections/{quote(collection, safe='')}"

    def error(self, message: str) -> SnapshotError:
        if self.api_key:
            message = message.replace(self.api_key, "***")
        return SnapshotError(message)

    def request(
        self, method: str, path: str, *, timeout: Any = None, **kwargs: Any
    ) -> requests.Response:
        what = f"{method} {path}"
        try:
            response = self.session.request(
                method,
                self.url + path,
                timeout=timeout or (CONNECT_SECONDS, STALL_SECONDS),
                allow_redirects=False,  # a redirect would carry the api-key header elsewhere
                **kwargs,
            )
        except requests.Timeout as exc:
            raise self.error(
                f"Qdrant node {self.shown} did not answer {what} in time: {exc}"
            ) from None
        except requests.ConnectionError as exc:
            raise self.error(f"cannot reach Qdrant node {self.shown} ({what}): {exc}") from None
        except requests.RequestException as exc:
            raise self.error(f"Qdrant node {self.shown}: {what} failed: {exc}") from None
        if response.status_code < 300:
            return response
        detail = _error_text(response)
        response.close()
        status = response.status_code
        if status in (401, 403):
            raise self.error(
                f"Qdrant node {self.shown} refused {what} (HTTP {status}): {detail}. "
                "Check the API key (GSV_QDRANT_API_KEY): it needs read-write access."
            )
        if status == 404:
            hint = "" if "/snapshots/" in path else f": is there a collection `{self.collection}`?"
            raise self.error(
                f"not found on Qdrant node {self.shown} ({what}, HTTP 404): {detail}{hint}"
            )
        if 300 <= status < 400:
            detail = f"redirected to {response.headers.get('Location')}: give the node's own URL"
        raise self.error(f"Qdrant node {self.shown}: {what} failed with HTTP {status}: {detail}")

    def result(self, method: str, path: str, **kwargs: Any) -> Any:
        """The `result` of Qdrant's `{"result": ..., "status": "ok", "time": ...}` envelope."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()["result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise self.error(
                f"Qdrant node {self.shown}: {method} {path} answered HTTP "
                f"{response.status_code} without a JSON result ({exc})"
            ) from None

    def local_shards(self) -> tuple[int, dict[int, int]]:
        """This node's peer id and the shards of the collection it holds, with their points."""
        info = self.result("GET", f"{self.base}/cluster")
        shards = {s["shard_id"]: s.get("points_count") or 0 for s in info["local_shards"]}
        return info["peer_id"], dict(sorted(shards.items()))

    def snapshots(self) -> list[dict[str, Any]]:
        return self.result("GET", f"{self.base}/snapshots")

    def delete_snapshot(self, name: str) -> None:
        self.request("DELETE", f"{self.base}/snapshots/{quote(name, safe='')}").close()


def _error_text(response: requests.Response) -> str:
    """Qdrant's error description: `{"status": {"error": ...}}`, or a plain-text body."""
    try:
        return str(response.json()["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:500] or response.reason or "no description"


def snapshot_collection(
    collection: str,
    store: ArtefactStore,
    folder: str,
    *,
    node_urls: list[str],
    api_key: str | None,
    timeout_seconds: float = 3600,
    poll_seconds: float = 2.0,
    chunk_size: int = 1 << 20,
) -> list[NodeSnapshot]:
    """Snapshot `collection` on every node that holds shards of it, into `folder` of `store`.

    `node_urls` address each node directly (not a load balancer). `timeout_seconds` bounds how
    long each node may take to create its snapshot. Every copy is verified against the server's
    SHA-256 before the server's snapshot is deleted. On any failure the copies written so far are
    removed and SnapshotError is raised.
    """
    if not node_urls:
        raise SnapshotError(f"no Qdrant node URLs given to snapshot collection `{collection}`")
    with requests.Session() as session:
        if api_key:
            session.headers["api-key"] = api_key
        nodes = [_Node(session, url, api_key, collection) for url in node_urls]
        holders = []
        for node in nodes:
            peer_id, shards = node.local_shards()
            if shards:
                holders.append((node, peer_id, shards))
        if not holders:
            asked = ", ".join(node.shown for node in nodes)
            raise SnapshotError(
                f"no node holds shards of collection `{collection}` (asked {asked}): "
                "a snapshot would be empty"
            )
        copied: list[NodeSnapshot] = []
        try:
            for node, peer_id, shards in holders:
                copied.append(
                    _snapshot_node(
                        node,
                        peer_id,
                        shards,
                        store,
                        folder,
                        timeout_seconds,
                        poll_seconds,
                        chunk_size,
                    )
                )
        except BaseException:
            for done in copied:
                with contextlib.suppress(Exception):
                    store.delete(done.key)
            raise
        return copied


def _snapshot_node(
    node: _Node,
    peer_id: int,
    shards: dict[int, int],
    store: ArtefactStore,
    folder: str,
    timeout_seconds: float,
    poll_seconds: float,
    chunk_size: int,
) -> NodeSnapshot:
    description = _create_snapshot(node, peer_id, timeout_seconds, poll_seconds)
    name = description["name"]
    key = f"{folder}/{node_label(node.url)}-{name}"
    try:
        expected = description.get("checksum")
        if not expected:
            raise node.error(
                f"Qdrant node {node.shown} reports no checksum for snapshot {name} "
                "(snapshots kept in object storage have none), so a copy cannot be verified"
            )
        stored = _download(node, name, store, key, chunk_size)
        if stored.sha256 != expected.lower() or stored.size != description["size"]:
            raise node.error(
                f"the copy of snapshot {name} from Qdrant node {node.shown} does not match: "
                f"{stored.size} bytes with SHA-256 {stored.sha256}, the server reports "
                f"{description['size']} bytes with checksum {expected}"
            )
    except BaseException as failure:
        with contextlib.suppress(Exception):
            store.delete(key)
        try:
            node.delete_snapshot(name)
        except SnapshotError as cleanup:
            failure.add_note(f"the server's snapshot {name} was not deleted either: {cleanup}")
        raise
    try:
        node.delete_snapshot(name)
    except SnapshotError as exc:
        store.delete(key)
        raise node.error(
            f"snapshot {name} was copied and verified, but deleting it from Qdrant node "
            f"{node.shown} failed, so it still uses the server's disk: {exc}"
        ) from None
    return NodeSnapshot(
        node_url=node.shown,
        name=name,
        key=key,
        size=stored.size,
        sha256=stored.sha256,
        shards=shards,
    )


def _create_snapshot(
    node: _Node, peer_id: int, timeout_seconds: float, poll_seconds: float
) -> dict[str, Any]:
    """Start a snapshot in the background and wait for it to be listed, complete.

    A synchronous request could outlast proxies' and clients' timeouts on a large collection.
    Qdrant lists a snapshot only once its archive and checksum are complete.
    """
    deadline = time.monotonic() + timeout_seconds
    before = {snapshot["name"] for snapshot in node.snapshots()}
    response = node.request("POST", f"{node.base}/snapshots", params={"wait": "false"})
    with response:
        if response.status_code == 200:  # answered synchronously, with the description
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return response.json()["result"]
    # Snapshot names are `<collection>-<peer id>-<time>.snapshot`: prefer this node's own.
    own = f"{node.collection}-{peer_id}-"
    while True:
        new = [s for s in node.snapshots() if s["name"] not in before]
        if new:
            mine = [s for s in new if s["name"].startswith(own)] or new
            return max(mine, key=lambda s: (s.get("creation_time") or "", s["name"]))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise node.error(
                f"snapshot of collection `{node.collection}` on Qdrant node {node.shown} was not "
                f"ready within {timeout_seconds:g}s (it may still appear on the server and "
                "need deleting; the server's log says whether creating it failed)"
            )
        time.sleep(min(poll_seconds, remaining))


def _download(
    node: _Node, name: str, store: ArtefactStore, key: str, chunk_size: int
) -> StoredFile:
    """Stream the snapshot into the store, one chunk in memory at a time."""
    path = f"{node.base}/snapshots/{quote(name, safe='')}"
    # identity: Qdrant would otherwise gzip the archive on the fly for requests' default headers.
    response = node.request("GET", path, stream=True, headers={"Accept-Encoding": "identity"})

    def chunks() -> Iterator[bytes]:
        try:
            for chunk in response.iter_content(chunk_size):
                if chunk:
                    yield chunk
        except requests.RequestException as exc:
            raise node.error(
                f"download of snapshot {name} from Qdrant node {node.shown} broke off: {exc}"
            ) from None

    with response:
        return store.write_stream(key, chunks())


class _MultipartBody:
    """A one-file multipart/form-data body produced piece by piece, of known length.

    requests sends a readable object with a length as a streamed body with a Content-Length.
    """

    def __init__(self, parts: Iterable[bytes], length: int):
        self._parts = iter(parts)
        self._current = memoryview(b"")
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while not self._current:
            part = next(self._parts, None)
            if part is None:
                return b""
            self._current = memoryview(part)
        if size < 0:
            size = len(self._current)
        data, self._current = self._current[:size], self._current[size:]
        return bytes(data)


def upload_snapshot(
    node_url: str,
    api_key: str | None,
    collection: str,
    source: Iterable[bytes] | BinaryIO,
    *,
    checksum: str,
    priority: str = "snapshot",
    size: int | None = None,
    timeout_seconds: float = 3600,
) -> None:
    """Recover `collection` on one node from a snapshot streamed from `source`.

    `source` is a readable binary file or an iterable of chunks (`store.iter_chunks(key)`).
    With `size` (or a seekable file) the body is sent with a Content-Length, otherwise chunked.
    Qdrant checks `checksum` (SHA-256) before recovering. `timeout_seconds` bounds the recovery,
    which the server finishes before it answers.
    """
    if priority not in PRIORITIES:
        raise SnapshotError(f"snapshot priority must be one of {', '.join(PRIORITIES)}")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", checksum):
        raise SnapshotError("checksum must be a SHA-256 digest: 64 hexadecimal digits")
    if isinstance(source, bytes | bytearray):
        chunks: Iterable[bytes] = [bytes(source)]
        size = len(source)
    elif hasattr(source, "read"):
        readable: BinaryIO = source  # type: ignore[assignment]
        if size is None and getattr(readable, "seekable", lambda: False)():
            size = _remaining(readable)
        chunks = iter(lambda: readable.read(UPLOAD_CHUNK), b"")
    else:
        chunks = source
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="snapshot"; '
        f'filename="{collection}-{uuid.uuid4().hex[:12]}.snapshot"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    parts = _concat(head, chunks, tail)
    body: Any = _MultipartBody(parts, len(head) + size + len(tail)) if size is not None else parts
    with requests.Session() as session:
        if api_key:
            session.headers["api-key"] = api_key
        node = _Node(session, node_url, api_key, collection)
        node.request(
            "POST",
            f"{node.base}/snapshots/upload",
            params={"priority": priority, "checksum": checksum.lower()},
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=(CONNECT_SECONDS, timeout_seconds),
        ).close()


def _remaining(readable: BinaryIO) -> int:
    """Bytes from the current position to the end of a seekable file."""
    here = readable.tell()
    end = readable.seek(0, 2)
    readable.seek(here)
    return end - here


def _concat(head: bytes, chunks: Iterable[bytes], tail: bytes) -> Iterator[bytes]:
    yield head
    for chunk in chunks:
        if chunk:
            yield chunk
    yield tail
