"""The portable "export" backup of a Qdrant collection, and its restore.

An export is every point (ids, all vectors, payloads) exactly as the Qdrant holds it
(qdrant_held.py: a server's answers, embedded Qdrant's file), read in batches into one Parquet
file (one row group per batch, so memory holds one batch), plus the collection's configuration.
Unlike a server snapshot it restores onto any Qdrant version, and it is the only method that
qdrant-client's embedded local mode supports.

Parquet columns (values are float64: embedded Qdrant keeps the doubles it was given, and a
server's float32 values are exact in float64, so no value is ever rounded):
    id_int / id_uuid            the point id (exactly one is set)
    vector                      the unnamed vector: dense list<float64>, or a multivector
                                list<list<float64>>
    vector:<name>               a named dense vector (list<float64>) or multivector
                                (list<list<float64>>); null where the point has none
    sparse:<name>:indices       a sparse vector's indices (list<uint32>) …
    sparse:<name>:values        … and values (list<float64>), in the order Qdrant holds them
    payload                     the payload as JSON text (any JSON survives unchanged)
"""

import itertools
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

from gsv_pipelines.lib.backups import qdrant_held
from gsv_pipelines.lib.core.store import ArtefactStore, StoredFile

POINTS_FILE = "points.parquet"
CONFIG_FILE = "collection.json"
VALUES = pa.float64()


class ExportError(RuntimeError):
    """An export or restore could not be completed."""


@dataclass(frozen=True)
class VectorLayout:
    """Which vector columns a collection has, from its configuration."""

    unnamed: bool
    unnamed_multi: bool
    dense: tuple[str, ...]  # named dense vectors
    multi: tuple[str, ...]  # named multivectors
    sparse: tuple[str, ...]

    @classmethod
    def of(cls, params: models.CollectionParams) -> "VectorLayout":
        vectors = params.vectors
        unnamed = isinstance(vectors, models.VectorParams)
        named: dict[str, models.VectorParams] = {} if unnamed else dict(vectors or {})
        return cls(
            unnamed=unnamed,
            unnamed_multi=unnamed and vectors.multivector_config is not None,
            dense=tuple(sorted(n for n, p in named.items() if p.multivector_config is None)),
            multi=tuple(sorted(n for n, p in named.items() if p.multivector_config is not None)),
            sparse=tuple(sorted(params.sparse_vectors or {})),
        )

    def schema(self) -> pa.Schema:
        floats = pa.list_(VALUES)
        fields = [pa.field("id_int", pa.uint64()), pa.field("id_uuid", pa.string())]
        if self.unnamed:
            fields.append(pa.field("vector", pa.list_(floats) if self.unnamed_multi else floats))
        fields += [pa.field(f"vector:{n}", floats) for n in self.dense]
        fields += [pa.field(f"vector:{n}", pa.list_(floats)) for n in self.multi]
        for n in self.sparse:
            fields += [
                pa.field(f"sparse:{n}:indices", pa.list_(pa.uint32())),
                pa.field(f"sparse:{n}:values", floats),
            ]
        fields.append(pa.field("payload", pa.string()))
        return pa.schema(fields)


def _flat_lists(values: list, item: pa.DataType) -> pa.Array:
    """A list<number> column through numpy: converting Python lists element by element in
    pyarrow costs about 20 times more, and dominates an export. Rows may differ in length
    (sparse vectors), be empty, or be null."""
    dtype = item.to_pandas_dtype()
    lengths = np.fromiter((0 if v is None else len(v) for v in values), np.int64, len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    if None in values:
        mask = pa.array([v is None for v in values])
    else:
        mask = None
        if len(values) and lengths.min() == lengths.max():  # dense rows: one 2-D conversion
            flat = np.asarray(values, dtype=dtype).reshape(-1)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=item))
    flat = np.fromiter(
        itertools.chain.from_iterable(v for v in values if v is not None), dtype, int(offsets[-1])
    )
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=item), mask=mask)


def _column(values: list, field: pa.Field) -> pa.Array:
    kind = field.type
    if pa.types.is_list(kind) and not pa.types.is_list(kind.value_type):
        return _flat_lists(values, kind.value_type)
    return pa.array(values, type=kind)


def _batch_table(points: list[Any], layout: VectorLayout, schema: pa.Schema) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in schema.names}
    for point in points:
        is_int = isinstance(point.id, int)
        columns["id_int"].append(point.id if is_int else None)
        columns["id_uuid"].append(None if is_int else str(point.id))
        vectors = qdrant_held.vectors_of(point)
        if layout.unnamed:
            columns["vector"].append(vectors.get(""))
        for name in (*layout.dense, *layout.multi):
            columns[f"vector:{name}"].append(vectors.get(name))
        for name in layout.sparse:
            sparse = vectors.get(name)
            columns[f"sparse:{name}:indices"].append(None if sparse is None else sparse.indices)
            columns[f"sparse:{name}:values"].append(None if sparse is None else sparse.values)
        columns["payload"].append(json.dumps(qdrant_held.payload_of(point), ensure_ascii=False))
    return pa.table([_column(columns[f.name], f) for f in schema], schema=schema)


def export_collection(
    client: QdrantClient,
    collection: str,
    store: ArtefactStore,
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
    count = 0
    with (
        store.open_hashed(posixpath.join(folder, POINTS_FILE)) as out,
        # Dictionary encoding only where values repeat: on float vectors it costs time and space.
        pq.ParquetWriter(
            out, schema, compression="zstd", use_dictionary=["id_uuid", "payload"]
        ) as writer,
    ):
        for points in qdrant_held.batches(client, collection, batch_size):
            writer.write_table(_batch_table(points, layout, schema))
            count += len(points)
            if on_batch is not None:
                on_batch(points)
    details = {
        "points": count,
        "values": "float64",
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


def _point_id(id_int: int | None, id_uuid: str | None) -> int | str:
    return id_int if id_int is not None else str(uuid.UUID(id_uuid))


def row_ids(batch: pa.RecordBatch | pa.Table) -> list[int | str]:
    """The point ids of a batch of backup rows, as Qdrant spells them."""
    ints = batch.column("id_int").to_pylist()
    uuids = batch.column("id_uuid").to_pylist()
    return [_point_id(i, u) for i, u in zip(ints, uuids, strict=True)]


def points_of(table: pa.Table, layout: VectorLayout) -> Iterator[models.PointStruct]:
    """The backup's rows as points to upsert, every value as stored."""
    for row in table.to_pylist():
        point_id = _point_id(row["id_int"], row["id_uuid"])
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
    store: ArtefactStore,
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
