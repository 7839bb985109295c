"""The rotation group in Dagster against a real OpenBao: inventory, check, rotate now, schedule,
and the leak search over everything the runs wrote."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import hvac
import pytest

from gsv_pipelines.defs.rotation.assets import build_rotation_defs
from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.rotation.policy import load_rotation_policy
from gsv_pipelines.resources.kubernetes import KubernetesResource
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.vault import VaultResource
from tests.services.kube_fake import FakeAppsV1Api, FakeCustomObjectsApi

POLICY = """
secrets:
  - name: webhook-hmac
    kind: hmac_key
    path: {prefix}/webhooks/hmac
    max_age_days: 30
  - name: qdrant-api-key
    kind: api_key
    path: {prefix}/qdrant/api-key
    field: api_key
    prefix: qk_
    max_age_days: 90
    consumers:
      external_secrets: [qdrant/qdrant-api-key]
      deployments: [qdrant/qdrant]
"""


class FakeKubernetes(KubernetesResource):
    """The Kubernetes resource over the fake API clients of tests/services/kube_fake.py."""

    def apis(self):
        return CUSTOM, APPS


CALLS: list[tuple] = []
CUSTOM = FakeCustomObjectsApi(log=CALLS)
APPS = FakeAppsV1Api(log=CALLS)


@pytest.fixture
def setup(openbao, tmp_path, request):
    prefix = f"t-{request.node.name[:20]}"
    path = tmp_path / "rotation.yaml"
    path.write_text(POLICY.format(prefix=prefix))
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    vault_kv.write(client, "secret", f"{prefix}/webhooks/hmac", {"key": "seed-hmac-1"}, cas=0)
    # Rotated 100 days ago: overdue for both policies.
    old = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    vault_kv.write(
        client,
        "secret",
        f"{prefix}/qdrant/api-key",
        {"api_key": "seed-api-1", "rotated_at": old},
        cas=0,
    )
    resources = {
        "vault": VaultResource(addr=openbao.addr, token=openbao.token),
        "policies": PoliciesResource(rotation_policy_path=str(path)),
        "kubernetes": FakeKubernetes(),
    }
    defs = dg.Definitions.merge(
        build_rotation_defs(load_rotation_policy(path)), dg.Definitions(resources=resources)
    )
    return {"defs": defs, "resources": resources, "client": client, "prefix": prefix}


def _values(client, prefix) -> set[str]:
    """Every value any version of the test's secrets ever held."""
    values = set()
    for path in (f"{prefix}/webhooks/hmac", f"{prefix}/qdrant/api-key"):
        latest = vault_kv.read(client, "secret", path).version
        for version in range(1, latest + 1):
            data = vault_kv.read(client, "secret", path, version=version).data
            values |= {
                v
                for k, v in data.items()
                if k in ("key", "api_key", "previous_key", "previous_api_key")
            }
    return values


def test_inventory_check_rotate_now_and_no_value_leaks(setup, capfd):
    defs, client = setup["defs"], setup["client"]
    inventory = defs.resolve_job_def("secret_inventory_job")
    rotation = defs.resolve_job_def("rotation_job")
    with dg.instance_for_test() as instance:
        first = inventory.execute_in_process(instance=instance)
        [evaluation] = first.get_asset_check_evaluations()
        assert evaluation.passed is False
        assert evaluation.description.startswith("qdrant-api-key: 100.0 days old")
        metadata = first.asset_materializations_for_node("rotation__secret_inventory")[0].metadata
        assert metadata["overdue"].value == 1 and metadata["secrets"].value == 2
        # A table to read, one row per secret.
        rows = {r.data["secret"]: r.data for r in metadata["inventory"].value.records}
        assert rows["qdrant-api-key"]["overdue"] is True and rows["webhook-hmac"]["version"] == 1

        # The due secret rotates without force; the fresh one is left alone unless forced.
        runs = []
        for name, force in [
            ("qdrant-api-key", False),
            ("webhook-hmac", False),
            ("webhook-hmac", True),
        ]:
            result = rotation.execute_in_process(
                partition_key=name,
                instance=instance,
                run_config={"ops": {"rotation__rotated_secret": {"config": {"force": force}}}},
            )
            runs.append(result)
        # Only the rotated secret with consumers nudged them: resync first, then restart.
        assert [(c[0], c[3], c[5] if c[0] != "patch_deployment" else c[2]) for c in CALLS][:1] == [
            ("patch_es", "qdrant", "qdrant-api-key")
        ]
        assert CALLS[-1][:3] == ("patch_deployment", "qdrant", "qdrant")
        actions = [
            r.asset_materializations_for_node("rotation__rotated_secret")[0]
            .metadata["action"]
            .value
            for r in runs
        ]
        assert actions == ["rotated", "nothing due", "rotated"]

        after = inventory.execute_in_process(instance=instance)
        [evaluation] = after.get_asset_check_evaluations()
        assert evaluation.passed is True
        versions = (
            after.asset_materializations_for_node("rotation__secret_inventory")[0]
            .metadata["versions"]
            .value
        )
        assert versions == {"webhook-hmac": 2, "qdrant-api-key": 2}

        api = vault_kv.read(client, "secret", f"{setup['prefix']}/qdrant/api-key").data
        assert api["api_key"].startswith("qk_") and api["previous_api_key"] == "seed-api-1"

        # The leak search: no value, old or new, in any event of any run, or on stdout/stderr.
        values = _values(client, setup["prefix"])
        assert len(values) == 4
        written = "".join(
            str(event) for run in [first, *runs, after] for event in instance.all_logs(run.run_id)
        )
        captured = capfd.readouterr()
        for value in values:
            assert value not in written
            assert value not in captured.out + captured.err


def test_the_schedule_asks_for_what_is_due(setup):
    defs, resources = setup["defs"], setup["resources"]
    schedule = defs.resolve_schedule_def("rotation_schedule")
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            resources={"vault": resources["vault"]},
            scheduled_execution_time=datetime.now(UTC),
            repository_def=defs.get_repository_def(),
        ) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests
    assert [(r.partition_key, r.tags["gsv/secret"]) for r in requests] == [
        ("qdrant-api-key", "qdrant-api-key")
    ]


def test_a_backfill_rotates_every_secret_in_one_run_and_names_failures(setup):
    defs, client, prefix = setup["defs"], setup["client"], setup["prefix"]
    rotation = defs.resolve_job_def("rotation_job")
    force = {"ops": {"rotation__rotated_secret": {"config": {"force": True}}}}
    with dg.instance_for_test() as instance:
        result = rotation.execute_in_process(
            instance=instance,
            run_config=force,
            tags={
                "dagster/asset_partition_range_start": "webhook-hmac",
                "dagster/asset_partition_range_end": "qdrant-api-key",
            },
        )
        metadata = result.asset_materializations_for_node("rotation__rotated_secret")[0].metadata
        assert (metadata["secrets"].value, metadata["rotated"].value) == (2, 2)
        assert len(result.asset_materializations_for_node("rotation__rotated_secret")) == 2

        # One secret gone from Vault: the other still rotates, and the run fails naming it.
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{prefix}/webhooks/hmac", mount_point="secret"
        )
        failed = rotation.execute_in_process(
            instance=instance,
            run_config=force,
            raise_on_error=False,
            tags={
                "dagster/asset_partition_range_start": "webhook-hmac",
                "dagster/asset_partition_range_end": "qdrant-api-key",
            },
        )
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    data = failure.step_failure_data.user_failure_data
    assert data.description.startswith("1 of 2 secrets failed: webhook-hmac: no secret at")
    # The other secret ran: its previous key is still in its grace period, so it waits.
    assert data.metadata["done"].value == "qdrant-api-key: deferred"
    assert vault_kv.read(client, "secret", f"{prefix}/qdrant/api-key").version == 2
