"""Points exactly as a Qdrant holds them: what a backup copies and a restore is compared with.

A Qdrant server answers with what it stores, so on a server the client's `retrieve` is the truth.
qdrant-client's embedded mode is different (measured, qdrant-client 1.20): it keeps two copies.
Its SQLite file holds every point as it was upserted (dense values as given, double precision);
its in-memory arrays hold float32 casts, with cosine vectors normalized on upsert and, as a side
effect of any cosine query, normalized in place. `retrieve` answers from memory, so what it
returns depends on what this process did before: right after an upsert or a query it is not what
the collection holds, and a freshly opened client returns the file's values. The file is what
every later opening of the folder reads, so it is the source of truth, and this module reads it.

It is the one place that reaches into qdrant-client's local mode (the collection's
`CollectionPersistence` and its `points` table of pickled `PointStruct`s). A test pins it against
what a freshly opened client returns through the public API; a qdrant-client whose local mode is
laid out otherwise fails here loudly rather than exporting the in-memory copy.
"""

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

EMBEDDED_ON_DISK = "embedded"
SERVER = "server"
IN_MEMORY = "in_memory"


class HeldPointsError(RuntimeError):
    """The points a Qdrant holds could not be read as it holds them."""


def _storage(client: QdrantClient, collection: str):
    """The collection's CollectionPersistence, None for a server or an in-memory client."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    local = getattr(client, "_client", None)
    if not isinstance(local, QdrantLocal):
        return None
    try:
        return local.collections[collection].storage
    except (AttributeError, KeyError) as exc:
        raise HeldPointsError(
            f"cannot read what embedded Qdrant keeps on disk for {collection!r}: this "
            f"qdrant-client's local mode is laid out differently ({exc!r})"
        ) from exc


def mode(client: QdrantClient) -> str:
    """Which kind of Qdrant `client` talks to: a server, embedded on disk, or in memory."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    local = getattr(client, "_client", None)
    if not isinstance(local, QdrantLocal):
        return SERVER
    return IN_MEMORY if local.location == ":memory:" else EMBEDDED_ON_DISK


def _connection(storage):
    connection = getattr(storage, "storage", None)
    if connection is None or not hasattr(storage, "encode_key"):
        raise HeldPointsError(
            "cannot read what embedded Qdrant keeps on disk: this qdrant-client's local "
            "persistence is laid out differently"
        )
    return connection


def _id_pages(client: QdrantClient, collection: str, page: int) -> Iterator[list]:
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=page, offset=offset, with_payload=False, with_vectors=False
        )
        if records:
            yield [r.id for r in records]
        if offset is None:
            return


def batches(
    client: QdrantClient, collection: str, batch_size: int, id_page: int = 50_000
) -> Iterator[list[Any]]:
    """Every point of `collection` (id, vector, payload), `batch_size` at a time, as held.

    On a server: every id a large page at a time, then the points by id (embedded Qdrant sorts
    every id on each scroll call, so scrolling with vectors in small batches is quadratic there).
    Embedded on disk: the rows of its SQLite file, streamed in storage order.
    """
    storage = _storage(client, collection)
    if storage is None:
        for ids in _id_pages(client, collection, id_page):
            for start in range(0, len(ids), batch_size):
                page = ids[start : start + batch_size]
                records = client.retrieve(collection, page, with_payload=True, with_vectors=True)
                if records:
                    yield records
        return
    cursor = _connection(storage).execute("SELECT point FROM points ORDER BY rowid")
    seen = 0
    while rows := cursor.fetchmany(batch_size):
        seen += len(rows)
        yield [pickle.loads(row[0]) for row in rows]
    expected = client.count(collection, exact=True).count
    if seen != expected:
        raise HeldPointsError(
            f"embedded Qdrant's file holds {seen} point(s) of {collection!r}, its memory "
            f"{expected}: the folder is not in a state to copy"
        )


def retrieve(client: QdrantClient, collection: str, ids: Iterable[Any]) -> dict[Any, Any]:
    """The points with these ids, as held (missing ids are absent from the answer)."""
    ids = list(ids)
    storage = _storage(client, collection)
    if storage is None:
        found = client.retrieve(collection, ids, with_payload=True, with_vectors=True)
        return {record.id: record for record in found}
    from qdrant_client.local.utils import normalize_point_id

    connection = _connection(storage)
    found: dict[Any, Any] = {}
    for start in range(0, len(ids), 500):
        keys = [storage.encode_key(normalize_point_id(i)) for i in ids[start : start + 500]]
        marks = ",".join("?" * len(keys))
        for (blob,) in connection.execute(f"SELECT point FROM points WHERE id IN ({marks})", keys):
            point = pickle.loads(blob)
            found[point.id] = point
    return found


def vectors_of(point: Any) -> dict[str, Any]:
    """A point's vectors by name ("" for the unnamed one), whichever reader returned it."""
    vector = point.vector
    if vector is None:
        return {}
    if isinstance(vector, dict):
        return dict(vector)
    return {"": vector}


def payload_of(point: Any) -> dict[str, Any]:
    """A point's payload; no payload and an empty one are the same to every Qdrant API."""
    return point.payload or {}


def is_sparse(value: Any) -> bool:
    return isinstance(value, models.SparseVector)


# A server skips normalizing a cosine vector whose squared length is within this of 1
# (qdrant lib/segment/src/spaces/tools.rs, is_length_zero_or_normalized), so normalizing twice
# changes nothing there.
SERVER_NORMALIZED = 1e-6
# Where a Qdrant normalizes what it was given, the copy is compared with our own float32
# normalization of the backup: unit components then agree to a few float32 ulps.
NORMALIZED_TOLERANCE = 1e-6
_DTYPES = {models.Datatype.FLOAT16: np.float16}


def held_form(where: str, params: models.VectorParams | None, value: Any) -> tuple[Any, float]:
    """What a Qdrant of kind `where` holds once given `value`, and the tolerance to compare with.

    `params` is the vector's configuration (None for a sparse vector). Embedded Qdrant's file
    keeps exactly what it was given: tolerance 0. A server keeps float32 (float16 for that
    datatype) and normalizes cosine vectors that are not unit already; in-memory local mode
    keeps float32 dense values, normalizes every cosine vector, and keeps sparse values as
    given. The tolerance is 0 unless that Qdrant normalized the values itself.
    """
    if where == EMBEDDED_ON_DISK:
        return value, 0.0
    if params is None:
        if where == IN_MEMORY:
            return value, 0.0
        return models.SparseVector(
            indices=list(value.indices),
            values=np.asarray(value.values, dtype=np.float32).astype(np.float64).tolist(),
        ), 0.0
    array = np.asarray(value, dtype=np.float32)
    tolerance = 0.0
    if params.distance == models.Distance.COSINE:
        rows = np.atleast_2d(array)
        squared = np.einsum("ij,ij->i", rows, rows)
        if where == SERVER:
            scale = (squared >= np.finfo(np.float32).eps) & (
                np.abs(squared - 1) > SERVER_NORMALIZED
            )
        else:
            scale = np.sqrt(squared) > 1e-9
        if scale.any():
            norms = np.where(scale, np.sqrt(squared), 1).astype(np.float32)
            rows = rows / norms[:, None]
            array = rows.reshape(array.shape)
            tolerance = NORMALIZED_TOLERANCE
    dtype = _DTYPES.get(params.datatype) if where == SERVER else None
    if dtype is not None:
        array = array.astype(dtype)
    return array.astype(np.float64).tolist(), tolerance


def same_values(expected: Any, actual: Any, tolerance: float = 0.0) -> bool:
    """Whether two vectors of one kind hold the same values (sparse: as index → value)."""
    if is_sparse(expected) or is_sparse(actual):
        if not (is_sparse(expected) and is_sparse(actual)):
            return False
        a = sorted(zip(expected.indices, map(float, expected.values), strict=True))
        b = sorted(zip(actual.indices, map(float, actual.values), strict=True))
        return a == b
    a = np.asarray(expected, dtype=np.float64)
    b = np.asarray(actual, dtype=np.float64)
    if a.shape != b.shape:
        return False
    if tolerance == 0:  # bit-equal, as the fingerprints compare: -0.0 is not 0.0
        return a.tobytes() == b.tobytes()
    return bool(np.all(np.abs(a - b) <= tolerance))
