"""The exporter as deploy/k8s/metrics.yaml runs it, on what its pod is given and nothing more: the
ConfigMap and the container's own variables (each replaced by its loopback equivalent), the
chart's dagster.yaml (as tests/deploy/test_helm_values.py reproduces it) in a DAGSTER_HOME it
must not write to, real PostgreSQL for the instance and the warehouse, and S3 (moto) for the
store. Every source is read, each from where the pod's settings point, and a scrape fits in the
container's memory limit.

No cluster runs here (DESIGN.md): what stands for the pod is its environment, its command, its
mounts; the image, the network and the kubelet are not exercised.
"""

import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gsv_pipelines.lib.alerts.incidents import Incidents, Observation
from gsv_pipelines.lib.core.processes import ManagedProcess, free_port
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.usage import tables as usage_tables
from gsv_pipelines.lib.usage import warehouse as usage_warehouse
from tests.deploy.test_helm_values import chart_instance, values_for
from tests.deploy.test_k8s_manifests import EXPORTER, K8S, _kustomize, _one
from tests.lib.alerts.test_metrics import DAY, _frame
from tests.services.s3 import ACCESS_KEY, SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "gsv-exporter-pod"
SOURCES = {"backups", "drills", "scanning", "rotation", "usage", "runs", "alerts"}
FAILING_JOB = "platform_db_backup_job"


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), what a memory limit is held against."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def _instance_home(home: Path, postgres, database: str) -> Path:
    """The chart's dagster.yaml for the prod values, its database moved to the tests' PostgreSQL
    (no TLS here). The run launcher keeps its in-cluster settings: the exporter must never build
    it, having no Kubernetes token."""
    rendered = chart_instance(values_for("prod"))
    local = {
        "username": "gsv",
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": "127.0.0.1",
        "port": postgres.port,
        "db_name": database,
        "params": {},
        "scheme": rendered["run_storage"]["config"]["postgres_db"]["scheme"],
    }
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        rendered[storage]["config"]["postgres_db"] = local
    assert rendered["run_launcher"]["config"]["load_incluster_config"] is True
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    return home


def _record_facts(env: dict[str, str], store: ArtefactStore, monkeypatch) -> None:
    """One fact per kind of source: a failed run of a job in the instance, an open incident in the
    store, a tenant over quota in the warehouse."""
    for name in ("DAGSTER_HOME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(name, env[name])
    # A job of the code location that fails at once: its platform database cannot be reached.
    monkeypatch.setenv("GSV_PLATFORM_DB_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("GSV_BACKUP_URL", str(Path(env["GSV_DATA_DIR"]).parent / "local-store"))
    from gsv_pipelines.definitions import defs as load_defs

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    with dg.DagsterInstance.get() as instance:
        result = (
            load_defs()
            .resolve_job_def(FAILING_JOB)
            .execute_in_process(instance=instance, partition_key=today, raise_on_error=False)
        )
    assert not result.success

    Incidents(store).observe(
        Observation(
            subject={"kind": "check", "asset": "a", "check": "c", "partition": None},
            what="c",
            label="a",
            failed=True,
            at=1.0,
            severity="error",
            run_id="r",
        ),
        lambda alert: None,
    )
    quota = _frame(
        usage_tables.QUOTA_STATUS,
        [{"tenant_id": "acme", "plan_id": "free", "usage_pct": 119.3, "level": 100}],
    )
    usage_warehouse.write_partition(
        env["GSV_WAREHOUSE_URL"], DAY, {usage_tables.QUOTA_STATUS: quota}
    )


def test_the_exporter_reads_every_source_with_what_its_pod_is_given(
    postgres, s3, tmp_path, monkeypatch
):
    docs = _kustomize(K8S)
    pod = _one(docs, "Deployment", EXPORTER)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = _one(docs, "ConfigMap", "gsv-pipelines-config")["data"]

    # The cluster's systems, here on loopback, for each variable whose value names one.
    home = _instance_home(tmp_path / "dagster_home", postgres, postgres.create_database("pod_dg"))
    scratch = tmp_path / "scratch"
    loopback = {
        "GSV_BACKUP_URL": f"s3://{BUCKET}/pipelines",
        "GSV_DATA_DIR": str(scratch),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_PASSWORD": postgres.password or "trust",
        "GSV_WAREHOUSE_URL": postgres.url(postgres.create_database("pod_warehouse")),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    assert [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v] == [
        "dagster-instance"
    ]
    env = dict(config)
    for item in container["env"]:
        assert item["name"] in loopback, f"no loopback value for the pod's {item['name']}"
        env[item["name"]] = loopback[item["name"]]
    env |= {name: loopback[name] for name in ("GSV_BACKUP_URL", "GSV_DATA_DIR")}
    # Beyond the pod's: the test's S3 endpoint (prod's store is AWS's own), a PATH and a HOME.
    env |= {
        "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
    }
    store = ArtefactStore(env["GSV_BACKUP_URL"], storage_options=s3.storage_options())
    store.fs.mkdir(BUCKET)
    _record_facts(env, store, monkeypatch)
    home_before = sorted(p.name for p in home.rglob("*"))

    # The container's command, by the console script, on loopback and a free port.
    command = container["command"]
    gsv = shutil.which(command[0], path=str(Path(sys.executable).parent))
    assert gsv, f"{command[0]} is not installed beside {sys.executable}"
    args = list(command[1:])
    args[args.index("--host") + 1] = "127.0.0.1"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    process = ManagedProcess(
        "gsv metrics (pod)", [gsv, *args, "--port", str(port)], tmp_path / "exporter.log", env=env
    ).start()
    try:
        process.wait_ready(lambda: requests.get(url, timeout=2).ok, timeout=120)
        text = requests.get(url, timeout=30).text
        peak = _peak_rss(process.pid)
    finally:
        process.stop()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    up = {dict(k[1])["source"]: v for k, v in samples.items() if k[0] == "gsv_metrics_source_up"}
    assert up == dict.fromkeys(SOURCES, 1.0), process.log_tail()
    # Each fact from where the pod's settings point: the instance, the store on S3, the warehouse.
    assert samples[("gsv_pipeline_run_failures_total", (("job", FAILING_JOB),))] == 1
    assert samples[("gsv_alert_open_incidents", (("kind", "check"), ("severity", "error")))] == 1
    ratio = samples[("gsv_tenant_quota_usage_ratio", (("plan", "free"), ("tenant", "acme")))]
    assert round(ratio, 3) == 1.193
    # Nothing written where the pod has a read-only mount or no volume at all.
    assert sorted(p.name for p in home.rglob("*")) == home_before == ["dagster.yaml"]
    assert not scratch.exists()
    # The limit holds the definitions and a scrape, with room to spare for real data.
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert peak < limit * 0.75, (
        f"peak {peak / 2**20:.0f} MiB against a {limit / 2**20:.0f} MiB limit"
    )
