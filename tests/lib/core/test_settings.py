import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from gsv_pipelines.lib.core.settings import DEFAULT_PARTITIONS_START, SettingsError, load_settings


def test_defaults_live_under_the_data_dir(tmp_path):
    settings = load_settings({"GSV_DATA_DIR": str(tmp_path)})
    assert settings.env == "local" and not settings.is_prod
    assert settings.qdrant_url is None
    assert settings.qdrant_path == tmp_path / "qdrant"
    assert settings.store_url == str(tmp_path / "backups")
    assert settings.platform_db_url == f"sqlite:///{tmp_path / 'platform.db'}"
    assert settings.warehouse_url == f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert settings.trivy_cache_dir == tmp_path / "trivy-cache"
    assert settings.registries_file is None
    assert settings.ui_url == "http://127.0.0.1:3000"
    assert settings.trivy_server_url is None
    assert settings.scan_concurrency == 4
    assert settings.secrets_set == frozenset()


def test_data_dir_defaults_to_dot_gsv_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).data_dir == tmp_path / ".gsv"


def test_every_contract_variable_is_read(tmp_path):
    settings = load_settings(
        {
            "GSV_ENV": "PROD",
            "GSV_DATA_DIR": str(tmp_path),
            "GSV_QDRANT_URL": "https://qdrant.example:6333",
            "GSV_QDRANT_PATH": str(tmp_path / "q"),
            "GSV_BACKUP_URL": "s3://backups/gsv",
            "VAULT_ADDR": "https://vault.example:8200",
            "VAULT_K8S_ROLE": "gsv-pipelines",
            "GSV_PLATFORM_DB_URL": "postgresql+psycopg2://u@db/platform",
            "GSV_WAREHOUSE_URL": "postgresql+psycopg2://u@db/warehouse",
            "TRIVY_BIN": "/opt/trivy",
            "TRIVY_CACHE_DIR": str(tmp_path / "tc"),
            "TRIVY_DB_REPOSITORY": "registry.example/trivy-db",
            "GSV_REGISTRIES": str(tmp_path / "registries.yaml"),
            "GSV_UI_URL": "https://dagster.example/",
            "GSV_TRIVY_SERVER_URL": "http://gsv-trivy-server:4954/",
            "GSV_SCAN_CONCURRENCY": "8",
        }
    )
    assert settings.is_prod
    assert settings.trivy_server_url == "http://gsv-trivy-server:4954"
    assert settings.scan_concurrency == 8
    assert settings.qdrant_url == "https://qdrant.example:6333"
    assert settings.qdrant_path == tmp_path / "q"
    assert settings.store_url == "s3://backups/gsv"
    assert settings.vault_addr == "https://vault.example:8200"
    assert settings.vault_k8s_role == "gsv-pipelines"
    assert settings.platform_db_url.endswith("/platform")
    assert settings.warehouse_url.endswith("/warehouse")
    assert settings.trivy_bin == "/opt/trivy"
    assert settings.trivy_cache_dir == tmp_path / "tc"
    assert settings.trivy_db_repository == "registry.example/trivy-db"
    assert settings.registries_file == tmp_path / "registries.yaml"
    assert settings.ui_url == "https://dagster.example"


def test_credentials_are_known_by_name_only():
    settings = load_settings({"VAULT_TOKEN": "s.very-secret", "GSV_QDRANT_API_KEY": "k-secret"})
    assert settings.secrets_set == {"VAULT_TOKEN", "GSV_QDRANT_API_KEY"}
    assert "very-secret" not in repr(settings) and "k-secret" not in repr(settings)


def test_unknown_environment_is_a_clear_error():
    with pytest.raises(SettingsError, match="GSV_ENV must be one of local, prod, not 'staging'"):
        load_settings({"GSV_ENV": "staging"})


def test_trivy_is_found_without_configuration():
    trivy = load_settings({}).trivy_bin
    assert trivy is not None and Path(trivy).name == "trivy"


def test_partitions_start_on_a_configured_day_usage_on_its_own_if_set():
    default = load_settings({})
    assert default.partitions_start == DEFAULT_PARTITIONS_START
    assert default.usage_partitions_start == DEFAULT_PARTITIONS_START
    one = load_settings({"GSV_PARTITIONS_START": "2026-11-20"})
    assert one.partitions_start == one.usage_partitions_start == date(2026, 11, 20)
    both = load_settings(
        {"GSV_PARTITIONS_START": "2026-11-20", "GSV_USAGE_PARTITIONS_START": "2026-10-01"}
    )
    assert (both.partitions_start, both.usage_partitions_start) == (
        date(2026, 11, 20),
        date(2026, 10, 1),
    )
    with pytest.raises(SettingsError, match="GSV_PARTITIONS_START must be a day as YYYY-MM-DD"):
        load_settings({"GSV_PARTITIONS_START": "20/11/2026"})


def test_the_definitions_partitions_start_where_the_settings_say(tmp_path):
    # In a process of its own: the partitions are built when the definitions are imported.
    code = (
        "from gsv_pipelines.definitions import defs; import dagster as dg\n"
        "graph = defs().resolve_asset_graph()\n"
        "for key in (['backups', 'platform_db_backup'], ['drills', 'dr_drill'],\n"
        "            ['scanning', 'deployed_images'], ['usage', 'usage_events']):\n"
        "    print(graph.get(dg.AssetKey(key)).partitions_def.get_first_partition_key())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_") and k != "DAGSTER_HOME"}
    env |= {"GSV_PARTITIONS_START": "2026-11-20", "GSV_USAGE_PARTITIONS_START": "2026-11-13"}
    env["GSV_DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2026-11-20", "2026-11-20", "2026-11-20", "2026-11-13"]


@pytest.mark.parametrize("value", ["0", "-2", "four", "1.5"])
def test_scan_concurrency_must_be_a_whole_number_of_at_least_one(value):
    with pytest.raises(SettingsError, match=f"GSV_SCAN_CONCURRENCY must be .*not '{value}'"):
        load_settings({"GSV_SCAN_CONCURRENCY": value})


def test_the_artefact_store_is_gsv_store_url_or_the_contract_s_gsv_backup_url(tmp_path):
    assert load_settings({"GSV_DATA_DIR": str(tmp_path)}).store_url == str(tmp_path / "backups")
    assert load_settings({"GSV_BACKUP_URL": "s3://old/prefix"}).store_url == "s3://old/prefix"
    both = {"GSV_BACKUP_URL": "s3://old/prefix", "GSV_STORE_URL": "s3://new/prefix"}
    assert load_settings(both).store_url == "s3://new/prefix"
