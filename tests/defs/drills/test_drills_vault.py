"""The Vault part of a drill, in Dagster, against real OpenBao on raft: nothing secret leaks."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from gsv_pipelines.defs.backups.assets import vault_snapshot
from gsv_pipelines.defs.drills.assets import dr_drill, dr_report
from gsv_pipelines.lib.core.leaks import leak_search
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.vault import VaultResource
from tests.lib.drills.test_vault import start_keyed_raft_server

TODAY = datetime.now(UTC).strftime("%Y-%m-%d")


@pytest.fixture
def source(tmp_path):
    server, keys = start_keyed_raft_server(tmp_path / "vault-source")
    yield server, keys
    server.stop()


def test_a_vault_drill_reads_the_sentinel_back_and_leaks_nothing(source, tmp_path, monkeypatch):
    server, keys = source
    monkeypatch.setenv("GSV_TEST_UNSEAL_KEYS", ",".join(keys))
    policy = tmp_path / "drills.yaml"
    policy.write_text(
        "targets:\n  vault: {unseal_keys_env: GSV_TEST_UNSEAL_KEYS, rto_minutes: 5}\n"
        f"scratch_dir: {tmp_path / 'scratch'}\n"
    )
    resources = {
        "qdrant": QdrantResource(path=str(tmp_path / "qdrant")),
        "artefact_store": ArtefactStoreResource(url=str(tmp_path / "backups")),
        "platform_db": DatabaseResource(url=f"sqlite:///{tmp_path / 'absent.db'}"),
        "vault": VaultResource(addr=server.addr, token=server.token),
        "policies": PoliciesResource(drill_policy_path=str(policy)),
    }
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert dg.materialize(
            [vault_snapshot], partition_key=TODAY, instance=instance, resources=resources
        ).success
        result = dg.materialize(
            [dr_drill, dr_report], partition_key=TODAY, instance=instance, resources=resources
        )

    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "rto_within_target": True,
        "rpo_within_target": True,
        "drill_verified": True,
    }
    report = result.asset_materializations_for_node("drills__dr_report")[0].metadata["report"]
    assert "| sentinel_secret | PASS | secret/gsv-dr/sentinel version 1 holds the nonce" in (
        report.value
    )
    assert list((tmp_path / "scratch").iterdir()) == []
    # Neither the token nor the unseal key is anywhere in what the runs wrote.
    assert leak_search(tmp_path / "dagster", [server.token, *keys]) == []
    assert leak_search(tmp_path / "backups", [server.token, *keys]) == []
