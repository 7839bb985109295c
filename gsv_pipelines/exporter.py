"""`gsv metrics`: the Prometheus exporter of the pipelines' signals (lib/alerts/metrics.py).

An HTTP endpoint that Prometheus scrapes (`/metrics`, default port 9477), reading the store, the
warehouse and the Dagster instance (DAGSTER_HOME) at scrape time, rather than a Pushgateway that
runs push to: the facts already live in durable storage, so a scrape reflects them exactly (a
deleted collection's series disappears instead of lingering in a gateway), Prometheus's `up`
tells when the exporter itself is down, and run pods push nothing. docs/alerts.md says more.
"""

import threading

from prometheus_client import CollectorRegistry, start_http_server

from gsv_pipelines.lib.alerts.metrics import PipelineCollector, Sources
from gsv_pipelines.lib.backups.policy import load_backup_policy
from gsv_pipelines.lib.core.settings import Settings
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.rotation.policy import load_rotation_policy

DEFAULT_PORT = 9477
INVENTORY = ["rotation", "secret_inventory"]


def sources(settings: Settings, instance, job_names: list[str]) -> Sources:
    import dagster as dg

    def run_failures() -> dict[str, int]:
        failed = [dg.DagsterRunStatus.FAILURE]
        return {
            job: instance.get_runs_count(dg.RunsFilter(job_name=job, statuses=failed))
            for job in job_names
        }

    def inventory():
        records = instance.fetch_materializations(dg.AssetKey(INVENTORY), limit=1).records
        if not records or "age_days" not in records[0].asset_materialization.metadata:
            return None
        ages = records[0].asset_materialization.metadata["age_days"].value
        return records[0].timestamp, {name: float(age) for name, age in ages.items()}

    return Sources(
        store=ArtefactStore(settings.store_url),
        backup_policy=load_backup_policy(settings.backup_policy),
        rotation_policy=load_rotation_policy(settings.rotation_policy),
        warehouse_url=settings.warehouse_url,
        run_failures=run_failures,
        inventory=inventory,
    )


def registry(settings: Settings, instance) -> CollectorRegistry:
    """A registry holding the pipelines' collector for the code location's jobs."""
    from gsv_pipelines.definitions import defs

    jobs = sorted(defs().get_repository_def().job_names)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(sources(settings, instance, jobs)))
    return registry


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve /metrics on host:port until the process is stopped."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        server, thread = start_http_server(port, addr=host, registry=registry(settings, instance))
        print(f"gsv: metrics on http://{host}:{port}/metrics", flush=True)
        try:
            threading.Event().wait()
        finally:
            server.shutdown()
            thread.join()
