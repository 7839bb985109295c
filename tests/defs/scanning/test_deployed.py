"""scanning/deployed_images from an inventory file, and from the cluster (a fake CoreV1Api: no
Kubernetes API server can run here)."""

from datetime import UTC, datetime

import dagster as dg
import pytest
from kubernetes.client.exceptions import ApiException

from gsv_pipelines.defs.scanning.deployed import deployed_images
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning.deployed import deployed_key, read_frame
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.workloads import InventoryWorkloadsResource
from tests.services.kube_fake import FakeCoreV1Api, fake_cluster_workloads, make_pod

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
TODAY = datetime.now(UTC).strftime("%Y-%m-%d")
INVENTORY = f"""
- namespace: platform
  workload: agent-registry
  container: registry
  image: registry.gsv.example/platform/agent-registry@{A}
- namespace: agents
  workload: runtime
  kind: StatefulSet
  image: registry.gsv.example/agents/runtime@{B}
- namespace: agents
  workload: runtime-canary
  image: registry.gsv.example/agents/runtime@{B}
"""


@pytest.fixture
def store_url(tmp_path) -> str:
    return str(tmp_path / "store")


def materialize(workloads, store_url: str, day: str, **kw) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [deployed_images],
            partition_key=day,
            instance=instance,
            resources={
                "workloads": workloads,
                "artefact_store": ArtefactStoreResource(url=store_url),
            },
            **kw,
        )


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = result.asset_materializations_for_node("scanning__deployed_images")
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def test_the_inventory_file_gives_the_days_deployed_images(tmp_path, store_url):
    inventory = tmp_path / "deployed-images.yaml"
    inventory.write_text(INVENTORY)
    result = materialize(InventoryWorkloadsResource(path=str(inventory)), store_url, "2026-03-01")
    metadata = metadata_of(result)
    assert {k: metadata[k] for k in ("rows", "images", "digests", "namespaces", "workloads")} == {
        "rows": 3,
        "images": 2,
        "digests": 2,
        "namespaces": 2,
        "workloads": 3,
    }
    assert metadata["rows_without_digest"] == 0
    assert metadata["source"] == f"inventory file {inventory}"
    assert "| agents | StatefulSet/runtime | runtime |" in metadata["deployed"]
    assert [c.name for c in metadata["dagster/column_schema"].columns][:3] == [
        "namespace",
        "workload_kind",
        "workload",
    ]
    store = ArtefactStore(store_url)
    frame = read_frame(store, deployed_key("2026-03-01"))
    assert sorted(zip(frame["workload"], frame["digest"], strict=True)) == [
        ("agent-registry", A),
        ("runtime", B),
        ("runtime-canary", B),
    ]
    assert metadata["sha256"] == store.hash(deployed_key("2026-03-01")).sha256
    assert store.glob("scanning/deployed/*.partial") == []


def test_a_missing_inventory_file_means_nothing_deployed(tmp_path, store_url):
    absent = tmp_path / "absent.yaml"
    metadata = metadata_of(
        materialize(InventoryWorkloadsResource(path=str(absent)), store_url, TODAY)
    )
    assert metadata["rows"] == 0 and metadata["digests"] == 0
    assert metadata["source"] == f"inventory file {absent} (absent: no deployed images)"
    assert metadata["deployed"] == "No deployed images."
    assert read_frame(ArtefactStore(store_url), deployed_key(TODAY)).empty


def test_a_bad_inventory_fails_clearly_and_keeps_the_days_file(tmp_path, store_url):
    inventory = tmp_path / "deployed-images.yaml"
    inventory.write_text(INVENTORY)
    resource = InventoryWorkloadsResource(path=str(inventory))
    materialize(resource, store_url, TODAY)
    before = ArtefactStore(store_url).hash(deployed_key(TODAY))

    inventory.write_text(INVENTORY + "- {namespace: n, workload: w, image: 'nginx:latest'}\n")
    result = materialize(resource, store_url, TODAY, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert f"deployed-images file {inventory}, entry 4 (n/w)" in message
    assert ArtefactStore(store_url).hash(deployed_key(TODAY)) == before


def test_a_past_day_is_kept_as_observed_and_today_is_replaced(tmp_path, store_url):
    inventory = tmp_path / "deployed-images.yaml"
    inventory.write_text(INVENTORY)
    resource = InventoryWorkloadsResource(path=str(inventory))
    materialize(resource, store_url, "2026-03-01")
    materialize(resource, store_url, TODAY)
    inventory.write_text(INVENTORY.split("- namespace: agents")[0])

    past = metadata_of(materialize(resource, store_url, "2026-03-01"))
    assert past["rows"] == 3
    assert past["source"].startswith("kept: ")
    today = metadata_of(materialize(resource, store_url, TODAY))
    assert today["rows"] == 1
    assert len(read_frame(ArtefactStore(store_url), deployed_key(TODAY))) == 1


def cluster_pods() -> list:
    labels = {"pod-template-hash": "5c4d"}
    api = [
        (
            "registry",
            "registry.gsv.example/platform/agent-registry:1.4",
            f"registry.gsv.example/platform/agent-registry@{A}",
        )
    ]
    return [
        make_pod(
            "platform",
            f"agent-registry-5c4d-{n}",
            owner=("ReplicaSet", "agent-registry-5c4d"),
            labels=labels,
            containers=api,
        )
        for n in ("a1", "b2", "c3")
    ] + [
        make_pod(
            "agents",
            "runtime-0",
            owner=("StatefulSet", "runtime"),
            containers=[
                (
                    "runtime",
                    "agents/runtime:2",
                    f"docker-pullable://registry.gsv.example/agents/runtime@{B}",
                )
            ],
        ),
        make_pod(
            "agents",
            "runtime-1",
            owner=("StatefulSet", "runtime"),
            phase="Pending",
            waiting="ErrImagePull",
            containers=[("runtime", "agents/runtime:3", "")],
        ),
        make_pod(
            "agents",
            "batch-x",
            phase="Succeeded",
            containers=[("batch", "agents/batch:1", f"registry.gsv.example/agents/batch@{B}")],
        ),
    ]


def test_the_cluster_gives_the_days_deployed_images(store_url):
    api = FakeCoreV1Api(cluster_pods())
    workloads = fake_cluster_workloads(api, page_size=2, exclude_namespaces=["kube-*"])
    metadata = metadata_of(materialize(workloads, store_url, "2026-03-02"))
    assert [kw.get("_continue") for _, kw in api.log] == [
        None,
        "fake-continue-2",
        "fake-continue-4",
    ]
    assert metadata["source"] == (
        "Kubernetes API: Running and Pending pods in all namespaces except kube-*"
    )
    assert (metadata["rows"], metadata["digests"], metadata["rows_without_digest"]) == (3, 2, 1)
    assert metadata["workloads"] == 2
    frame = read_frame(ArtefactStore(store_url), deployed_key("2026-03-02"))
    rows = frame[["workload_kind", "workload", "digest", "pods", "note"]].to_dict("records")
    by_workload = {
        (r["workload"], r["digest"] if isinstance(r["digest"], str) else None): r for r in rows
    }
    assert by_workload[("agent-registry", A)]["pods"] == 3
    assert by_workload[("agent-registry", A)]["workload_kind"] == "Deployment"
    assert by_workload[("runtime", B)]["pods"] == 1
    assert by_workload[("runtime", None)]["note"] == (
        "no imageID yet: the image is not pulled (waiting: ErrImagePull)"
    )
    assert "batch" not in set(frame["workload"])


def test_a_cluster_that_refuses_fails_the_run_clearly(store_url):
    api = FakeCoreV1Api([], errors={1: ApiException(status=403, reason="Forbidden")})
    result = materialize(fake_cluster_workloads(api), store_url, TODAY, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "cannot list pods: forbidden (403)" in failure.step_failure_data.error.to_string()
    assert not ArtefactStore(store_url).exists(deployed_key(TODAY))
