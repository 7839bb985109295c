"""The portable "export" backup of a Qdrant collection, and its restore.

An export is every point (ids, all vectors, payloads) read in batches into one Parquet file
(one row group per batch, so memory holds one batch and a page of ids), plus the collection's
configuration.
Unlike a server snapshot it restores onto any Qdrant version, and it is the only method that
qdrant-client's embedded local mode supports.

Parquet columns:
    id_int / id_uuid            the point id (exactly one is set)
    vector                      the unnamed dense vector, list<float32>
    vector:<name>               a named dense vector (list<float32>) or multivector
                                (list<list<float32>>); null where the point has none
    sparse:<name>:indices       a sparse vector's indices (list<uint32>) …
    sparse:<name>:values        … and values (list<float32>)
    payload                     the payload as JSON text (any JSON survives unchanged)
"""

import json
import posixpath
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from qdrant_client import QdrantClient, models

from gsv_pipelines.lib.store import BackupStore, StoredFile

POINTS_FILE = "points.parquet"
ID_PAGE = 50_000
CONFIG_FILE = "collection.json"


class ExportError(RuntimeError):
    """An export or restore could not be completed."""


@dataclass(frozen=True)
class VectorLayout:
    """Which vector columns a collection has, from its configuration."""

    unnamed: bool
    dense: tuple[str, ...]  # named dense vectors
    multi: tuple[str, ...]  # named multivectors
    sparse: tuple[str, ...]

    @classmethod
    def of(cls, params: models.CollectionParams) -> "VectorLayout":
        vectors = params.vectors
        if isinstance(vectors, models.VectorParams):
            if vectors.multivector_config is not None:
                raise ExportError("an unnamed multivector collection is not supported")
            named: dict[str, models.VectorParams] = {}
        else:
            named = dict(vectors or {})
        return cls(
            unnamed=isinstance(vectors, models.VectorParams),
            dense=tuple(sorted(n for n, p in named.items() if p.multivector_config is None)),
            multi=tuple(sorted(n for n, p in named.items() if p.multivector_config is not None)),
            sparse=tuple(sorted(params.sparse_vectors or {})),
        )

    def schema(self) -> pa.Schema:
        floats = pa.list_(pa.float32())
        fields = [pa.field("id_int", pa.uint64()), pa.field("id_uuid", pa.string())]
        if self.unnamed:
            fields.append(pa.field("vector", floats))
        fields += [pa.field(f"vector:{n}", floats) for n in self.dense]
        fields += [pa.field(f"vector:{n}", pa.list_(floats)) for n in self.multi]
        for n in self.sparse:
            fields += [
                pa.field(f"sparse:{n}:indices", pa.list_(pa.uint32())),
                pa.field(f"sparse:{n}:values", floats),
            ]
        fields.append(pa.field("payload", pa.string()))
        return pa.schema(fields)


def _float_lists(values: list, field: pa.Field) -> pa.Array:
    """Equal-length float vectors through numpy: converting Python lists element by element in
    pyarrow costs about 20 times more, and dominates an export."""
    if field.type == pa.list_(pa.float32()) and values and all(v is not None for v in values):
        matrix = np.asarray(values, dtype=np.float32)
        if matrix.ndim == 2:
            offsets = np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.ravel()))
    return pa.array(values, type=field.type)


def _batch_table(records: list[models.Record], layout: VectorLayout, schema: pa.Schema) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in schema.names}
    for record in records:
        is_int = isinstance(record.id, int)
        columns["id_int"].append(record.id if is_int else None)
        columns["id_uuid"].append(None if is_int else str(record.id))
        vector = record.vector
        if layout.unnamed:
            columns["vector"].append(vector)
        else:
            vector = vector or {}
            for name in (*layout.dense, *layout.multi):
                columns[f"vector:{name}"].append(vector.get(name))
            for name in layout.sparse:
                sparse = vector.get(name)
                columns[f"sparse:{name}:indices"].append(sparse.indices if sparse else None)
                columns[f"sparse:{name}:values"].append(sparse.values if sparse else None)
        columns["payload"].append(json.dumps(record.payload or {}, ensure_ascii=False))
    return pa.table([_float_lists(columns[f.name], f) for f in schema], schema=schema)


def _id_pages(client: QdrantClient, collection: str) -> Iterator[list]:
    """Every point id, a large page at a time. Embedded Qdrant sorts every id on each scroll
    call, so scrolling with vectors in small batches is quadratic; ids first, then the points
    by id in batches, is linear (and as good on a server)."""
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=ID_PAGE, offset=offset, with_payload=False, with_vectors=False
        )
        if records:
            yield [r.id for r in records]
        if offset is None:
            return


def export_collection(
    client: QdrantClient,
    collection: str,
    store: BackupStore,
    folder: str,
    batch_size: int = 1000,
    on_batch: Callable[[list[models.Record]], None] | None = None,
) -> tuple[list[StoredFile], dict[str, Any]]:
    """Write the collection's config and points under `folder`; return the files and details.

    `on_batch` sees every batch of points as read from Qdrant (the backup fingerprints a sample).
    """
    if not client.collection_exists(collection):
        raise ExportError(f"collection {collection!r} does not exist")
    info = client.get_collection(collection)
    layout = VectorLayout.of(info.config.params)
    schema = layout.schema()
    config = info.model_dump(mode="json", include={"config", "payload_schema"})
    config_file = store.write_stream(
        posixpath.join(folder, CONFIG_FILE), [json.dumps(config, indent=2).encode()]
    )
    points = 0
    with (
        store.open_hashed(posixpath.join(folder, POINTS_FILE)) as out,
        # Dictionary encoding only where values repeat: on float vectors it costs time and space.
        pq.ParquetWriter(
            out, schema, compression="zstd", use_dictionary=["id_uuid", "payload"]
        ) as writer,
    ):
        for ids in _id_pages(client, collection):
            for start in range(0, len(ids), batch_size):
                records = client.retrieve(
                    collection,
                    ids[start : start + batch_size],
                    with_payload=True,
                    with_vectors=True,
                )
                if records:
                    writer.write_table(_batch_table(records, layout, schema))
                    points += len(records)
                    if on_batch is not None:
                        on_batch(records)
    details = {
        "points": points,
        "vectors": config["config"]["params"]["vectors"],
        "sparse_vectors": config["config"]["params"].get("sparse_vectors"),
        "payload_indexes": sorted(config.get("payload_schema") or {}),
        "batch_size": batch_size,
    }
    return [config_file, out.stored], details


def _diff(model_cls, value: dict | None):
    return model_cls(**{k: v for k, v in value.items() if v is not None}) if value else None


def create_like(
    client: QdrantClient,
    target: str,
    config: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> None:
    """Create `target` with the exported configuration, payload indexes included.

    The collection's own metadata is restored, with `metadata` added (a DR drill marks its
    scratch collections so).
    """
    params = models.CollectionParams(**config["config"]["params"])
    cfg = config["config"]
    metadata = {**(cfg.get("metadata") or {}), **(metadata or {})}
    client.create_collection(
        target,
        vectors_config=params.vectors,
        sparse_vectors_config=params.sparse_vectors,
        shard_number=params.shard_number,
        replication_factor=params.replication_factor,
        write_consistency_factor=params.write_consistency_factor,
        on_disk_payload=params.on_disk_payload,
        hnsw_config=_diff(models.HnswConfigDiff, cfg.get("hnsw_config")),
        optimizers_config=_diff(models.OptimizersConfigDiff, cfg.get("optimizer_config")),
        wal_config=_diff(models.WalConfigDiff, cfg.get("wal_config")),
        quantization_config=cfg.get("quantization_config"),
        **({"metadata": metadata} if metadata else {}),
    )
    for field_name, index in (config.get("payload_schema") or {}).items():
        client.create_payload_index(
            target, field_name, field_schema=index.get("params") or index["data_type"], wait=True
        )


def points_of(table: pa.Table, layout: VectorLayout) -> Iterator[models.PointStruct]:
    rows = table.to_pylist()
    for row in rows:
        point_id = row["id_int"] if row["id_int"] is not None else str(uuid.UUID(row["id_uuid"]))
        if layout.unnamed:
            vector: Any = row["vector"]
        else:
            vector = {
                n: row[f"vector:{n}"]
                for n in (*layout.dense, *layout.multi)
                if row[f"vector:{n}"] is not None
            }
            for n in layout.sparse:
                if row[f"sparse:{n}:indices"] is not None:
                    vector[n] = models.SparseVector(
                        indices=row[f"sparse:{n}:indices"], values=row[f"sparse:{n}:values"]
                    )
        yield models.PointStruct(id=point_id, vector=vector, payload=json.loads(row["payload"]))


def restore_collection(
    client: QdrantClient,
    store: BackupStore,
    folder: str,
    target: str,
    batch_size: int = 1000,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Create `target` from the export in `folder` and upsert every point; return the count.

    Refuses an existing target: a restore never merges into, or overwrites, live data.
    `metadata` is stored with the new collection before any point is written.
    """
    if client.collection_exists(target):
        raise ExportError(f"restore target {target!r} already exists; choose another name")
    config = store.read_json(posixpath.join(folder, CONFIG_FILE))
    layout = VectorLayout.of(models.CollectionParams(**config["config"]["params"]))
    create_like(client, target, config, metadata=metadata)
    restored = 0
    with store.open(posixpath.join(folder, POINTS_FILE)) as source:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_size):
            points = list(points_of(pa.Table.from_batches([batch]), layout))
            client.upsert(target, points=points, wait=True)
            restored += len(points)
    return restored
