"""deploy/helm: the values for Dagster's official chart, checked offline against the chart's own
schema (tests/data/k8s), turned into the instance's dagster.yaml the way the chart's templates do
it, loaded by Dagster itself (on the tests' real PostgreSQL), and used by dagster-k8s's own code
to build the Job of a scan step, which must pass the Kubernetes schema and Pod Security.

Neither Helm nor an API server can run here (DESIGN.md): `chart_instance` below stands for the
chart's rendering, for exactly the keys these values set.
"""

import json
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.lib.core import pod_sizes
from tests.deploy import schemas

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "deploy" / "helm"
ENVIRONMENTS = ("prod", "dev")
# `helm install dagster dagster/dagster -n dagster`: the release, its namespace, and the chart's
# `dagster.fullname` for that release name (the release name contains the chart's).
RELEASE = NAMESPACE = FULLNAME = "dagster"
# The objects of the chart's schema that take any keys (`type: object` and nothing more), which
# these values reach, and what checks their contents instead.
FREE_FORM = {
    # dagster's instance schema, when the instance below loads
    "additionalInstanceConfig": "Dagster's instance config schema (instance_for_test)",
    "dagsterDaemon.runMonitoring": "Dagster's instance config schema (instance_for_test)",
    "dagsterDaemon.runRetries": "Dagster's instance config schema (instance_for_test)",
    # dagster-k8s and Kubernetes, when the step Job below is built and validated
    "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig": "the step Job, strict",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.jobSpecConfig": "the step Job, strict",
    # psycopg2 / libpq connection parameters
    "postgresql.postgresqlParams": "libpq (sslmode is one of its parameters)",
}


def _values_file(name: str) -> dict:
    return yaml.safe_load((HELM / name).read_text())


def helm_merge(base: dict, overlay: dict) -> dict:
    """How Helm combines `-f` files: maps merge key by key, anything else is replaced, and a
    null removes the key."""
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def values_for(environment: str) -> dict:
    return helm_merge(_values_file("values.yaml"), _values_file(f"values-{environment}.yaml"))


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def chart_instance(values: dict) -> dict:
    """The dagster.yaml that templates/configmap-instance.yaml renders from `values`, for the keys
    these values set. Read from the chart's templates (dagster-io/dagster, helm/dagster/templates:
    configmap-instance.yaml at 835892b, helpers/instance/_run-launcher.tpl at a07d616,
    _run-coordinator.tpl at 7b87546, _postgresql.tpl at 0bd187e, _scheduler.tpl at 091d841,
    _compute-log-manager.tpl at 84842bc; helpers/_helpers.tpl for names). What the chart renders
    from defaults these values leave alone (sensor and schedule threads, python_logs, retention)
    is left out: Dagster's defaults stand for it here."""
    pg = values["postgresql"]
    assert not pg["enabled"], "the bundled PostgreSQL is not what these values use"
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
    }
    if pg.get("postgresqlScheme"):
        postgres_db["scheme"] = pg["postgresqlScheme"]

    def storage(module: str, cls: str) -> dict:
        return {"module": module, "class": cls, "config": {"postgres_db": postgres_db}}

    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": values["global"].get("serviceAccountName")
        or values["serviceAccount"]["name"],
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    for key in ("envConfigMaps", "envSecrets"):
        if k8s.get(key):
            launcher[_snake(key)] = [item["name"] for item in k8s[key] if "name" in item]
    for key in ("envVars", "volumeMounts", "volumes", "labels", "resources", "securityContext"):
        if k8s.get(key):
            launcher[_snake(key)] = k8s[key]
    if k8s.get("runK8sConfig"):
        launcher["run_k8s_config"] = {_snake(k): v for k, v in k8s["runK8sConfig"].items() if v}

    daemon = values["dagsterDaemon"]
    instance = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": storage("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_storage": storage("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("dagster_postgres.event_log", "PostgresEventLogStorage"),
    }
    assert values["scheduler"]["type"] == "DagsterDaemonScheduler"
    coordinator = daemon["runCoordinator"]
    if daemon["enabled"] and coordinator["enabled"]:
        assert coordinator["type"] == "QueuedRunCoordinator"
        queued = coordinator["config"]["queuedRunCoordinator"]
        instance["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        }
        # `config:` only when a setting is there; then max_concurrent_runs is always written.
        if any(v not in (None, [], {}, "") for v in queued.values()):
            config = {"max_concurrent_runs": queued.get("maxConcurrentRuns", -1)}
            if queued.get("tagConcurrencyLimits"):
                config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
            instance["run_coordinator"]["config"] = config
    assert values["computeLogManager"]["type"] == "NoOpComputeLogManager"
    instance["compute_logs"] = {
        "module": "dagster.core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring.get("enabled"):
        rendered = (
            "enabled",
            "startTimeoutSeconds",
            "cancelTimeoutSeconds",
            "maxResumeRunAttempts",
            "pollIntervalSeconds",
            "freeSlotsAfterRunEndSeconds",
        )
        assert set(monitoring) <= set(rendered), set(monitoring) - set(rendered)
        instance["run_monitoring"] = {
            _snake(k): monitoring[k] for k in rendered if monitoring.get(k) is not None
        }
    retries = daemon["runRetries"]
    if daemon["enabled"] and retries.get("enabled"):
        instance["run_retries"] = {"enabled": True}
        if retries.get("maxRetries"):
            instance["run_retries"]["max_retries"] = retries["maxRetries"]
    instance["telemetry"] = {"enabled": values["telemetry"]["enabled"]}
    # The chart appends it as YAML after everything else: a key here must not be one above.
    extra = values.get("additionalInstanceConfig") or {}
    assert not set(extra) & set(instance), set(extra) & set(instance)
    return {**instance, **extra}


def chart_workspace(values: dict) -> dict:
    """templates/configmap-workspace.yaml (835892b): the webserver's and daemon's workspace."""
    users = values["dagster-user-deployments"]
    workspace = values["dagsterWebserver"]["workspace"]
    assert users["enabled"] and workspace["enabled"] and not users["enableSubchart"]
    return {
        "load_from": [
            {
                "grpc_server": {
                    "host": server["host"],
                    "port": server["port"],
                    "location_name": server.get("name") or server["host"],
                }
            }
            for server in workspace["servers"]
        ]
    }


# --- The chart's schema -------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_values_validate_against_the_chart_s_schema(environment):
    values = values_for(environment)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in schemas.chart_validator().iter_errors(values)
    ]
    assert errors == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_key_we_set_is_declared_by_the_chart_s_schema(environment):
    for values in (values_for(environment), _values_file(f"values-{environment}.yaml")):
        undeclared, _ = schemas.undeclared_keys(values, set(FREE_FORM))
        assert undeclared == []
    # The free-form places reached are exactly those listed, each checked by something else.
    _, free = schemas.undeclared_keys(values_for(environment), set(FREE_FORM))
    assert free == set(FREE_FORM)


def test_a_misspelt_key_fails_even_where_the_schema_would_let_it_pass():
    values = values_for("prod")
    values["dagsterWebserver"]["replicaCout"] = 2
    context = values["dagsterDaemon"]["securityContext"] = dict(
        values["dagsterDaemon"]["securityContext"]
    )
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    # The schema is open where Dagster keeps its run-launcher block: `runK8sConfig` closed,
    values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfg"] = {}
    # ... and a Kubernetes type inside, through the referenced definitions.
    values["dagsterWebserver"]["resources"] = {"requets": {"cpu": "1"}}
    undeclared, _ = schemas.undeclared_keys(values, set(FREE_FORM))
    assert sorted(undeclared) == [
        "dagsterDaemon.securityContext.readOnlyRootFileSystem",
        "dagsterWebserver.replicaCout",
        "dagsterWebserver.resources.requets",
        "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfg",
    ]
    messages = " ".join(e.message for e in schemas.chart_validator().iter_errors(values))
    for key in ("replicaCout", "readOnlyRootFileSystem", "podSpecConfg", "requets"):
        assert key in messages


# --- The instance the values produce -------------------------------------------------------------


def _kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig naming a server nobody listens at: the K8sRunLauncher loads its client
    settings when it is created, and outside a pod there is no in-cluster configuration. No
    request is made."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "offline", "user": {"token": "offline"}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
                ],
                "current-context": "offline",
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def instance_database(postgres) -> str:
    return postgres.create_database("helm_values_instance")


@pytest.fixture
def instance(instance_database, postgres, tmp_path, monkeypatch):
    """The prod instance as Dagster loads it. Two things differ from the cluster, both outside the
    chart's rendering: the database address (the tests' PostgreSQL, without TLS) and the launcher's
    Kubernetes client settings (an offline kubeconfig instead of the pod's in-cluster ones)."""
    rendered = chart_instance(values_for("prod"))
    local = {
        "username": "gsv",
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": "127.0.0.1",
        "port": postgres.port,
        "db_name": instance_database,
        "params": {},
        "scheme": rendered["run_storage"]["config"]["postgres_db"]["scheme"],
    }
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        rendered[storage]["config"]["postgres_db"] = local
    launcher = rendered["run_launcher"]["config"]
    launcher["load_incluster_config"] = False
    launcher["kubeconfig_file"] = _kubeconfig(tmp_path)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres.password or "trust")
    with dg.instance_for_test(overrides=rendered) as instance:
        yield instance


def _local_instance() -> dict:
    return yaml.safe_load((ROOT / "dagster.yaml").read_text())


def test_the_instance_launches_runs_as_kubernetes_jobs_from_postgres(instance):
    from dagster_k8s import K8sRunLauncher

    launcher = instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    values = values_for("prod")["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher.job_namespace == NAMESPACE
    assert launcher.env_config_maps == [m["name"] for m in values["envConfigMaps"]]
    assert launcher.env_secrets == [s["name"] for s in values["envSecrets"]]
    assert launcher.resources == values["resources"]
    assert launcher.instance_config_map == "dagster-instance"
    assert launcher.postgres_password_secret == "dagster-postgresql-secret"
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.compute_log_manager).__name__ == "NoOpComputeLogManager"
    assert not instance.telemetry_enabled


def test_the_coordinator_queues_with_the_local_instance_s_tag_limits(instance):
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    queue = instance.get_concurrency_config().run_queue_config
    local = _local_instance()["concurrency"]
    assert queue.tag_concurrency_limits == local["runs"]["tag_concurrency_limits"]
    assert queue.max_concurrent_runs == 10 > local["runs"]["max_concurrent_runs"]
    pools = instance.get_concurrency_config().pool_config
    assert pools.default_pool_limit == local["pools"]["default_limit"]


def test_runs_are_monitored_and_retried_after_infrastructure_failures_only(instance):
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 300
    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries == 2
    assert instance.run_retries_retry_on_asset_or_op_failure is False


def test_the_workspace_points_at_the_code_server_of_deploy_k8s():
    [entry] = chart_workspace(values_for("prod"))["load_from"]
    deployment = schemas.load_yaml(ROOT / "deploy" / "k8s" / "deployment.yaml")[0]
    [service] = schemas.load_yaml(ROOT / "deploy" / "k8s" / "service.yaml")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert entry["grpc_server"] == {
        "host": service["metadata"]["name"],
        "port": service["spec"]["ports"][0]["port"],
        "location_name": command[command.index("--location-name") + 1],
    }
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert (
        entry["grpc_server"]["location_name"]
        == (workspace["load_from"][0]["python_module"]["location_name"])
    )


# --- The Job of a step -------------------------------------------------------------------------

IMAGE = "registry.example.com/platform/gsv-pipelines@sha256:" + "0" * 64


def _container_context() -> dict:
    deployment = schemas.load_yaml(ROOT / "deploy" / "k8s" / "deployment.yaml")[0]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    return json.loads(env["DAGSTER_CONTAINER_CONTEXT"]["value"])


def _k8s_job(instance, tags: dict, name: str, component: str, args: list, labels: dict) -> dict:
    """The Job dagster-k8s starts for a run or a step, built with its own code in the order
    K8sRunLauncher and dagster_k8s.executor.K8sStepHandler do it (0.29.27): the run launcher's
    settings, the code location's container context (DAGSTER_CONTAINER_CONTEXT,
    deploy/k8s/deployment.yaml), then the run's or step's `dagster-k8s/config` tag;
    `construct_dagster_k8s_job` makes the Job."""
    launcher = instance.run_launcher
    context = (
        K8sContainerContext(
            image_pull_policy=launcher.image_pull_policy,
            image_pull_secrets=launcher.image_pull_secrets,
            service_account_name=launcher.service_account_name,
            env_config_maps=launcher.env_config_maps,
            env_secrets=launcher.env_secrets,
            env_vars=launcher.env_vars,
            volume_mounts=launcher.volume_mounts,
            volumes=launcher.volumes,
            labels=launcher.labels,
            namespace=launcher.job_namespace,
            resources=launcher.resources,
            scheduler_name=launcher.scheduler_name,
            security_context=launcher.security_context,
            run_k8s_config=K8sContainerContext.create_from_config(
                {"k8s": {"run_k8s_config": launcher.run_k8s_config}}
            ).run_k8s_config,
        )
        .merge(K8sContainerContext.create_from_config(_container_context()))
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    )
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, launcher),
        args=args,
        job_name=name,
        pod_name=name,
        component=component,
        user_defined_k8s_config=context.run_k8s_config,
        labels={**labels, "dagster/code-location": "gsv_pipelines"},
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def step_job(instance, op_tags: dict, step_key: str) -> dict:
    """The Job k8s_job_executor starts for a step."""
    return _k8s_job(
        instance,
        op_tags,
        f"dagster-step-{step_key}",
        "step_worker",
        ["dagster", "api", "execute_step"],
        {"dagster/op": step_key},
    )


def _assets() -> dict[str, dg.AssetsDefinition]:
    definitions = load_defs()
    return {
        key.to_user_string(): asset
        for asset in definitions.assets or []
        if isinstance(asset, dg.AssetsDefinition)
        for key in asset.keys
    }


def test_the_scan_step_job_carries_our_resources_tags_identity_and_hardening(instance):
    scan = _assets()["scanning/image_scan"]
    job = step_job(instance, scan.op.tags, "scanning__image_scan")
    schemas.validate(job)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    sized = pod_sizes.SCAN[pod_sizes.K8S_CONFIG_TAG]["container_config"]["resources"]
    assert container["resources"] == sized
    assert container["image"] == IMAGE
    context = _container_context()["k8s"]
    assert pod["serviceAccountName"] == context["service_account_name"] == "gsv-pipelines"
    assert pod["automountServiceAccountToken"] is True
    assert container["securityContext"] == context["security_context"]
    assert (
        pod["securityContext"] == context["run_k8s_config"]["pod_spec_config"]["security_context"]
    )
    assert schemas.restricted_violations(pod) == []
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["gsv/workload"] == "pipelines"  # what networkpolicies.yaml opens
    assert labels["app.kubernetes.io/component"] == "step_worker"
    assert labels["dagster/op"] == "scanning__image_scan"
    # The settings and credentials of the configuration contract, by reference.
    assert {"configMapRef": {"name": "gsv-pipelines-config"}} in container["envFrom"]
    assert {"secretRef": {"name": "gsv-pipelines-secrets"}} in container["envFrom"]
    # The shared Trivy cache and the scratch volumes the read-only root filesystem needs.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/gsv", "/var/cache/trivy"} <= mounts
    # The run launcher's Job settings (values.yaml runK8sConfig.jobSpecConfig) hold too.
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_a_scan_and_its_gates_run_in_the_run_s_pod_sized_as_a_scan(instance, monkeypatch):
    """A pod a step would cost more than the scan (docs/scanning.md): image_scan_job runs the scan
    and its two gates in its run's pod (the in-process executor), which K8sRunLauncher sizes from
    the run's `dagster-k8s/config` tag; every other job keeps a pod a step."""
    monkeypatch.setenv("GSV_ENV", "prod")
    definitions = load_defs()
    scan = definitions.resolve_job_def("image_scan_job")
    assert scan.executor_def.name == "in_process"
    assert definitions.resolve_job_def("trivy_db_job").executor_def.name == "k8s"
    job = _k8s_job(
        instance,
        scan.run_tags,
        "dagster-run-0",
        "run_worker",
        ["dagster", "api", "execute_run"],
        {"dagster/job": "image_scan_job"},
    )
    schemas.validate(job)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert (
        container["resources"]
        == pod_sizes.SCAN[pod_sizes.K8S_CONFIG_TAG]["container_config"]["resources"]
    )
    assert schemas.restricted_violations(pod) == []
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/gsv", "/var/cache/trivy"} <= mounts


def test_a_step_without_a_size_gets_the_container_context_s_defaults(instance):
    report = _assets()["scanning/image_risk_report"]
    assert pod_sizes.K8S_CONFIG_TAG not in report.op.tags
    job = step_job(instance, report.op.tags, "scanning__image_risk_report")
    schemas.validate(job)
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == _container_context()["k8s"]["resources"]


SIZED = {
    "scanning/image_scan": pod_sizes.SCAN,
    "scanning/config_scan": pod_sizes.SCAN,
    "scanning/trivy_db": pod_sizes.SCAN,
    "backups/qdrant_backup": pod_sizes.BACKUP,
    "backups/platform_db_backup": pod_sizes.BACKUP,
    "backups/vault_snapshot": pod_sizes.BACKUP,
    "usage/usage_events": pod_sizes.USAGE_EXTRACT,
    "drills/dr_drill": pod_sizes.DRILL,
}


def test_scans_backups_usage_extraction_and_drills_have_their_own_pod_sizes(instance):
    assets = _assets()
    for key, size in SIZED.items():
        tags = assets[key].op.tags
        assert json.loads(tags[pod_sizes.K8S_CONFIG_TAG]) == size[pod_sizes.K8S_CONFIG_TAG], key
        job = step_job(instance, tags, key.replace("/", "__"))
        schemas.validate(job)
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert (
            container["resources"]
            == size[pod_sizes.K8S_CONFIG_TAG]["container_config"]["resources"]
        ), key
    sized = {k for k, a in assets.items() if pod_sizes.K8S_CONFIG_TAG in a.op.tags}
    assert sized == set(SIZED)
