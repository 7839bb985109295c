"""The code location loads, with no secret set, and every asset documents itself."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from gsv_pipelines.definitions import defs as load_defs
from gsv_pipelines.lib.core.settings import SECRET_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"backups", "drills", "rotation", "scanning", "usage", "alerts"}


def spec_problems(specs) -> list[str]:
    """What each asset spec lacks of: description, owners, kinds, a contract group."""
    problems = []
    for spec in specs:
        name = spec.key.to_user_string()
        if not (spec.description or "").strip():
            problems.append(f"{name}: no description")
        if not spec.owners:
            problems.append(f"{name}: no owners")
        if not spec.kinds:
            problems.append(f"{name}: no kinds")
        if spec.group_name not in GROUPS:
            problems.append(f"{name}: group {spec.group_name!r} is not one of {sorted(GROUPS)}")
        elif spec.key.path[0] != spec.group_name:
            problems.append(f"{name}: key does not start with its group {spec.group_name!r}")
    return problems


@pytest.fixture
def no_secrets(monkeypatch):
    for name in SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_definitions_load_without_secrets(no_secrets):
    defs = load_defs()
    assert set(defs.resources) == {
        "vault",
        "qdrant",
        "artefact_store",
        "platform_db",
        "policies",
        "kubernetes",
        "trivy",
        "registries",
        "workloads",
        "warehouse",
        "notifier",
    }
    assert defs.resolve_sensor_def("automation_condition_sensor")
    assert defs.resolve_sensor_def("run_failure_alert_sensor")
    assert defs.resolve_sensor_def("check_failure_alert_sensor")


@pytest.mark.parametrize(("env", "kind"), [("local", "Inventory"), ("prod", "Cluster")])
def test_deployed_images_come_from_the_cluster_only_in_prod(monkeypatch, no_secrets, env, kind):
    monkeypatch.setenv("GSV_ENV", env)
    assert type(load_defs().resources["workloads"]).__name__ == f"{kind}WorkloadsResource"


@pytest.mark.parametrize(("env", "executor"), [("local", None), ("prod", "k8s")])
def test_prod_runs_each_step_in_a_kubernetes_job_of_its_own(monkeypatch, no_secrets, env, executor):
    monkeypatch.setenv("GSV_ENV", env)
    defs = load_defs()
    assert (defs.executor.name if defs.executor else None) == executor
    assert defs.resolve_job_def("usage_job").executor_def.name == (
        executor or "multi_or_in_process_executor"
    )


def test_no_step_hands_a_value_to_another(no_secrets):
    # A step pod (k8s_job_executor) sees no other pod's files: an asset that loaded its upstream's
    # value through the default IO manager would find nothing there.
    repo = load_defs().get_repository_def()
    loading = [
        f"{assets_def.node_def.name}.{inp.name}"
        for assets_def in repo.asset_graph.assets_defs
        if assets_def.is_executable and assets_def.computation
        for inp in assets_def.node_def.input_defs
        if not inp.dagster_type.is_nothing
    ]
    assert loading == []


def test_every_asset_spec_documents_itself(no_secrets):
    assert spec_problems(load_defs().resolve_all_asset_specs()) == []


def test_spec_check_catches_an_undocumented_asset():
    @dg.asset(key=["backups", "bare"], group_name="misc")
    def bare() -> None: ...

    @dg.asset(
        key=["usage", "documented"],
        group_name="usage",
        description="Usage of the day.",
        owners=["team:platform"],
        kinds={"pandas"},
    )
    def documented() -> None: ...

    specs = dg.Definitions(assets=[bare, documented]).resolve_all_asset_specs()
    assert spec_problems(specs) == [
        "backups/bare: no description",
        "backups/bare: no owners",
        "backups/bare: no kinds",
        "backups/bare: group 'misc' is not one of "
        "['alerts', 'backups', 'drills', 'rotation', 'scanning', 'usage']",
    ]


@pytest.mark.parametrize(("env", "status"), [("local", "STOPPED"), ("prod", "RUNNING")])
def test_gsv_env_decides_whether_automation_runs(monkeypatch, env, status):
    monkeypatch.setenv("GSV_ENV", env)
    sensor = load_defs().resolve_sensor_def("automation_condition_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus[status]


def test_secrets_bind_as_env_vars_never_as_values(monkeypatch):
    monkeypatch.setenv("VAULT_TOKEN", "s.token-that-must-not-show")
    monkeypatch.setenv("GSV_QDRANT_URL", "http://127.0.0.1:6333")
    monkeypatch.setenv("GSV_QDRANT_API_KEY", "api-key-that-must-not-show")
    monkeypatch.setenv("GSV_TRIVY_SERVER_URL", "http://127.0.0.1:4954")
    monkeypatch.setenv("GSV_TRIVY_SERVER_TOKEN", "trivy-token-that-must-not-show")
    resources = load_defs().resources
    assert resources["vault"].token == dg.EnvVar("VAULT_TOKEN")
    assert resources["qdrant"].api_key == dg.EnvVar("GSV_QDRANT_API_KEY")
    assert resources["trivy"].server_token == dg.EnvVar("GSV_TRIVY_SERVER_TOKEN")
    assert resources["trivy"].server_url == "http://127.0.0.1:4954"
    assert "must-not-show" not in repr(resources)


def test_dagster_validates_the_workspace(no_secrets):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:gsv_pipelines"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gsv_pipelines" in result.stdout + result.stderr
    # The project's code location name is the workspace's, whatever the checkout is called.
    assert "does not match the name" not in result.stdout + result.stderr


def test_instance_yaml_queues_runs_with_limits_monitoring_and_no_telemetry(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 4
        assert {limit["key"] for limit in queue.tag_concurrency_limits} == {"gsv/secret"}
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled
        assert str(instance.storage_directory()).startswith(str(tmp_path))


def test_loading_the_code_location_leaves_the_heavy_clients_unimported():
    # Every run, sensor tick and reload loads the definitions: the clients only runs need
    # (over a second of imports together) must wait for the runs that use them.
    code = (
        "import sys; from gsv_pipelines.definitions import defs; defs(); "
        "print(' '.join(m for m in ('qdrant_client', 'pyarrow', 'sqlalchemy', 'kubernetes', "
        "'psycopg2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


SOURCES = {
    "backups/qdrant_collections",
    "backups/platform_database",
    "backups/vault_storage",
}


def _parents(graph, key: str) -> set[str]:
    return {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}


def test_one_source_per_real_system_shared_by_every_domain_that_reads_it(no_secrets):
    graph = load_defs().resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    sources = {key.to_user_string() for key in graph.get_all_asset_keys()} - {
        key.to_user_string() for key in graph.executable_asset_keys
    }
    assert sources == SOURCES
    assert _parents(graph, "backups/platform_db_backup") == {"backups/platform_database"}
    for usage in sorted(k for k in keys if k.startswith("usage/")):
        assert "backups/platform_database" in _parents(graph, usage), usage
    assert _parents(graph, "backups/vault_snapshot") == {"backups/vault_storage"}
    assert _parents(graph, "rotation/secret_inventory") == {"backups/vault_storage"}
    assert "backups/vault_storage" in _parents(graph, "scanning/image_scan")
    assert _parents(graph, "backups/qdrant_backup") == {"backups/qdrant_collections"}
    # The shipped drill policy drills Qdrant and the platform database, not Vault.
    assert _parents(graph, "drills/dr_drill") == {
        "backups/qdrant_backup",
        "backups/platform_db_backup",
    }

    # The domains are connected through what they share: in the global lineage, grouped by
    # group as the UI shows it, every group is reached from every other.
    linked: dict[str, set[str]] = {key.split("/")[0]: set() for key in keys}
    for key in keys:
        for parent in _parents(graph, key):
            linked[key.split("/")[0]].add(parent.split("/")[0])
            linked[parent.split("/")[0]].add(key.split("/")[0])
    reached, todo = set(), ["usage"]
    while todo:
        group = todo.pop()
        if group not in reached:
            reached.add(group)
            todo.extend(linked[group])
    assert reached == {"backups", "drills", "rotation", "scanning", "usage"}


def test_a_drill_policy_with_a_vault_target_makes_the_snapshot_a_parent_of_the_drill(tmp_path):
    policy = tmp_path / "drills.yaml"
    policy.write_text("targets:\n  platform_db: {}\n  vault: {unseal_keys_env: GSV_UNSEAL}\n")
    code = (
        "from gsv_pipelines.definitions import defs; import dagster as dg\n"
        "node = defs().resolve_asset_graph().get(dg.AssetKey(['drills', 'dr_drill']))\n"
        "print(' '.join(sorted(k.to_user_string() for k in node.parent_keys)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GSV_DRILL_POLICY"}
    env["GSV_DRILL_POLICY"] = str(policy)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["backups/platform_db_backup", "backups/vault_snapshot"]


def _placeholders(text: str | None) -> list[str]:
    """`<placeholders>` outside code spans: the UI's markdown renderer takes them for HTML tags
    and shows nothing of them."""
    return re.findall(r"<[^>\s][^>]*>", re.sub(r"`[^`]*`", "", text or ""))


def test_descriptions_keep_their_placeholders_in_the_markdown_the_ui_renders(no_secrets):
    defs = load_defs()
    repo, graph = defs.get_repository_def(), defs.resolve_asset_graph()
    described = [(s.key.to_user_string(), s.description) for s in defs.resolve_all_asset_specs()]
    described += [(str(key), graph.get(key).description) for key in graph.asset_check_keys]
    described += [(job.name, job.description) for job in repo.get_all_jobs()]
    described += [(s.name, s.description) for s in [*repo.schedule_defs, *repo.sensor_defs]]
    for job in repo.get_all_jobs():
        for node in job.graph.nodes:
            schema = node.definition.config_schema
            fields = getattr(schema.config_type, "fields", None) if schema else None
            described += [(f"{node.name}.{n}", f.description) for n, f in (fields or {}).items()]
    assert [(name, _placeholders(text)) for name, text in described if _placeholders(text)] == []
    assert _placeholders("a <digest> and `a <kept> one`") == ["<digest>"]
