"""The pipelines' signals as Prometheus metrics, read from their sources of truth at scrape time.

Backups from the store's manifests, the last DR drill from its record, open vulnerabilities of
running images from the newest risk report, secret ages from the newest inventory, quotas and
agent error rates from the warehouse's newest day, run failures and alert deliveries from the
Dagster instance and the store. Nothing is kept in the exporter's memory but a short cache, so a
restart loses nothing and a scrape always reflects what is stored. Ages are exported as the Unix
timestamps of what happened (`*_timestamp_seconds`), objectives beside them, so rules compare
`time() - ...` with the objective (Prometheus's own advice). A source that cannot be read sets
`gsv_metrics_source_up{source}` to 0 and the others still report.
"""

import logging
import posixpath
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gsv_pipelines.lib.alerts.deliver import dead_letters
from gsv_pipelines.lib.alerts.incidents import OPEN, Incidents
from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.backups.policy import BackupPolicy
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.run import RECORD_FILE, RECORDS, load_record
from gsv_pipelines.lib.rotation.policy import RotationPolicy

log = logging.getLogger(__name__)
CACHE_SECONDS = 15.0
RISK_SUMMARIES = "scanning/risk/*/summary.json"


@dataclass
class Sources:
    store: ArtefactStore
    backup_policy: BackupPolicy
    rotation_policy: RotationPolicy
    warehouse_url: str
    # Failed runs per job, from the Dagster instance.
    run_failures: Callable[[], dict[str, int]]
    # The newest secret inventory: (when it was taken, age in days per secret), or None.
    inventory: Callable[[], tuple[float, dict[str, float]] | None]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def backup_metrics(store: ArtefactStore, policy: BackupPolicy) -> list[Metric]:
    last = _gauge(
        "gsv_backup_last_success_timestamp_seconds",
        "Consistency point of the newest verified backup of a target (its age: time() - this).",
        ["kind", "target"],
    )
    rpo = _gauge(
        "gsv_backup_rpo_seconds", "The target's RPO in the backup policy.", ["kind", "target"]
    )
    objectives = {
        backups.PLATFORM_DB: lambda target: policy.platform_db.rpo_hours,
        backups.VAULT: lambda target: policy.vault.rpo_hours,
        backups.QDRANT: lambda target: policy.for_collection(target).rpo_hours,
    }
    for kind, rpo_hours in objectives.items():
        for target in store.list_dirs(kind):
            newest = backups.newest_backup(store, kind, target)
            if newest is None:
                continue
            last.add_metric([kind, target], newest.consistency_time.timestamp())
            rpo.add_metric([kind, target], rpo_hours(target) * 3600)
    return [last, rpo]


def drill_metrics(store: ArtefactStore) -> list[Metric]:
    labels = ["kind", "target"]
    families = {
        "last": _gauge(
            "gsv_drill_last_run_timestamp_seconds", "Start of the newest DR drill.", labels
        ),
        "ok": _gauge(
            "gsv_drill_success",
            "1 if the target restored, verified and met its RTO and RPO in the newest drill.",
            labels,
        ),
        "rto": _gauge("gsv_drill_rto_seconds", "Restore to verified, newest drill.", labels),
        "rpo": _gauge(
            "gsv_drill_rpo_seconds", "Drill start minus backup point, newest drill.", labels
        ),
        "rto_target": _gauge(
            "gsv_drill_rto_objective_seconds", "RTO objective (drill policy).", labels
        ),
        "rpo_target": _gauge(
            "gsv_drill_rpo_objective_seconds", "RPO objective (drill policy).", labels
        ),
    }
    for drill_id in reversed(store.list_dirs(RECORDS)):
        key = posixpath.join(RECORDS, drill_id, RECORD_FILE)
        if not store.exists(key):
            continue  # a drill still running, or killed before its record
        record = load_record(store, key)
        for t in record.targets:
            values = [t.kind, t.target]
            families["last"].add_metric(values, _ts(record.started_at))
            ok = t.verified and not t.error and t.rto_ok and t.rpo_ok
            families["ok"].add_metric(values, 1.0 if ok else 0.0)
            for name, value in (
                ("rto", t.rto_seconds),
                ("rpo", t.rpo_seconds),
                ("rto_target", t.rto_target_seconds),
                ("rpo_target", t.rpo_target_seconds),
            ):
                if value is not None:
                    families[name].add_metric(values, value)
        break
    return list(families.values())


def risk_metrics(store: ArtefactStore) -> list[Metric]:
    from gsv_pipelines.lib.scanning.deployed import read_frame, risk_key

    open_fixable = _gauge(
        "gsv_deployed_image_open_fixable_vulnerabilities",
        "Fixable vulnerabilities not covered by an ignore, per running container and severity "
        "(the newest image risk report).",
        ["namespace", "workload", "container", "severity"],
    )
    report = _gauge(
        "gsv_image_risk_report_timestamp_seconds", "Day (00:00 UTC) of the newest risk report.", []
    )
    summaries = store.glob(RISK_SUMMARIES)
    if summaries:
        day = posixpath.basename(posixpath.dirname(summaries[-1]))
        report.add_metric([], datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp())
        findings = read_frame(store, risk_key(day, "findings.parquet"))
        ignored = findings["policy_note"].fillna("").str.startswith("ignored")
        vulns = findings[(findings["kind"] == "vulnerability") & findings["fixable"] & ~ignored]
        scope = ["namespace", "workload", "container", "severity"]
        for values, count in Counter(map(tuple, vulns[scope].fillna("").values)).items():
            open_fixable.add_metric([str(v) for v in values], count)
    return [open_fixable, report]


def secret_metrics(
    policy: RotationPolicy, inventory: tuple[float, dict[str, float]] | None
) -> list[Metric]:
    rotated = _gauge(
        "gsv_secret_rotated_timestamp_seconds",
        "When the current version of a secret was written (the newest inventory).",
        ["secret"],
    )
    max_age = _gauge(
        "gsv_secret_max_age_seconds", "max_age_days of the rotation policy.", ["secret"]
    )
    ages = inventory[1] if inventory else {}
    for secret in policy.secrets:
        max_age.add_metric([secret.name], secret.max_age_days * 86400)
        if secret.name in ages:
            rotated.add_metric([secret.name], inventory[0] - ages[secret.name] * 86400)
    return [rotated, max_age]


def usage_metrics(warehouse_url: str) -> list[Metric]:
    import sqlalchemy as sa

    quota = _gauge(
        "gsv_tenant_quota_usage_ratio",
        "Month-to-date usage over the plan's included amount (the larger of calls and tokens), "
        "the warehouse's newest day.",
        ["tenant", "plan"],
    )
    error_ratio = _gauge(
        "gsv_agent_error_ratio",
        "Share of an agent's calls that failed, newest day.",
        ["agent", "provider"],
    )
    calls = _gauge("gsv_agent_calls", "An agent's calls, newest day.", ["agent", "provider"])
    engine = sa.create_engine(warehouse_url)
    try:
        with engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
            newest = "(SELECT max(day) FROM {table})"
            if "quota_status" in tables:
                for tenant, plan, pct in connection.execute(
                    sa.text(
                        "SELECT tenant_id, plan_id, usage_pct FROM quota_status WHERE day = "
                        + newest.format(table="quota_status")
                    )
                ):
                    quota.add_metric([tenant, plan or ""], float(pct) / 100)
            if "agent_performance" in tables:
                for agent, provider, n, rate in connection.execute(
                    sa.text(
                        "SELECT agent_id, provider, calls, error_rate FROM agent_performance "
                        "WHERE day = " + newest.format(table="agent_performance")
                    )
                ):
                    error_ratio.add_metric([agent, provider or ""], float(rate))
                    calls.add_metric([agent, provider or ""], float(n))
    finally:
        engine.dispose()
    return [quota, error_ratio, calls]


def run_metrics(failures: dict[str, int]) -> list[Metric]:
    counter = CounterMetricFamily(
        "gsv_pipeline_run_failures",
        "Failed runs per job (the Dagster instance's run history).",
        labels=["job"],
    )
    for job, count in sorted(failures.items()):
        counter.add_metric([job], count)
    return [counter]


def alert_metrics(store: ArtefactStore) -> list[Metric]:
    letters = _gauge(
        "gsv_alert_dead_letters",
        "Alerts not delivered, waiting for `gsv alerts replay`.",
        ["channel"],
    )
    for channel, count in Counter(d["channel"] for d in dead_letters(store)).items():
        letters.add_metric([channel], count)
    incidents = _gauge(
        "gsv_alert_open_incidents", "Open incidents (failed runs and checks).", ["kind", "severity"]
    )
    opened = Counter(
        (i["subject"]["kind"], i["severity"]) for i in Incidents(store).all() if i["status"] == OPEN
    )
    for (kind, severity), count in opened.items():
        incidents.add_metric([kind, severity], count)
    return [letters, incidents]


class PipelineCollector(Collector):
    """Every family above, read at most once per CACHE_SECONDS (scrapes from several Prometheus
    replicas, or a rule evaluation storm, cost one read of the sources)."""

    def __init__(self, sources: Sources, cache_seconds: float = CACHE_SECONDS):
        self.sources = sources
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def _read(self) -> list[Metric]:
        s = self.sources
        readers: dict[str, Callable[[], Iterable[Metric]]] = {
            "backups": lambda: backup_metrics(s.store, s.backup_policy),
            "drills": lambda: drill_metrics(s.store),
            "scanning": lambda: risk_metrics(s.store),
            "rotation": lambda: secret_metrics(s.rotation_policy, s.inventory()),
            "usage": lambda: usage_metrics(s.warehouse_url),
            "runs": lambda: run_metrics(s.run_failures()),
            "alerts": lambda: alert_metrics(s.store),
        }
        up = _gauge(
            "gsv_metrics_source_up", "1 if the source was read at the last scrape.", ["source"]
        )
        duration = _gauge("gsv_metrics_read_duration_seconds", "Time to read every source.", [])
        families: list[Metric] = []
        started = time.monotonic()
        for source, read in readers.items():
            try:
                families += read()
                up.add_metric([source], 1.0)
            except Exception as exc:  # one unreadable source must not hide the others
                log.warning(f"metrics: cannot read {source}: {type(exc).__name__}: {exc}")
                up.add_metric([source], 0.0)
        duration.add_metric([], time.monotonic() - started)
        return [*families, up, duration]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, self._read())
            return list(self._cached[1])
