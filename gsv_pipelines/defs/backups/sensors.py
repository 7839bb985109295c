import dagster as dg

from gsv_pipelines.defs.automation import sensor_status
from gsv_pipelines.defs.backups.partitions import COLLECTIONS
from gsv_pipelines.lib.drills.scratch import PREFIX as SCRATCH_PREFIX
from gsv_pipelines.resources.qdrant import QdrantResource


def collection_changes(
    present: list[str], known: list[str]
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    added = sorted(set(present) - set(known))
    retired = sorted(set(known) - set(present))
    requests = []
    if added:
        requests.append(COLLECTIONS.build_add_request(added))
    if retired:
        requests.append(COLLECTIONS.build_delete_request(retired))
    return requests


@dg.definitions
def sensors() -> dg.Definitions:

    @dg.sensor(
        name="qdrant_collections_sensor",
        minimum_interval_seconds=300,
        default_status=sensor_status(),
        description="Keeps one partition of backups/qdrant_backup per Qdrant collection: adds "
        "new collections, retires those that disappeared (their backups stay in the store).",
    )
    def qdrant_collections_sensor(context: dg.SensorEvaluationContext, qdrant: QdrantResource):
        with qdrant.open() as client:
            # A DR drill's scratch copies come and go: they are never backed up.
            present = [
                c.name
                for c in client.get_collections().collections
                if not c.name.startswith(SCRATCH_PREFIX)
            ]
        known = context.instance.get_dynamic_partitions(COLLECTIONS.name)
        changes = collection_changes(present, known)
        if not changes:
            return dg.SkipReason(f"{len(present)} collections, all known")
        return dg.SensorResult(dynamic_partitions_requests=changes)

    return dg.Definitions(sensors=[qdrant_collections_sensor])
