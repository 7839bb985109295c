"""Deployed images: pods (kubernetes client models and API JSON) and the inventory file."""

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning.deployed import (
    DEPLOYED_COLUMNS,
    DeployedImagesError,
    InventoryError,
    cluster_deployed_images,
    deployed_key,
    newest_deployed_key,
    parse_image_id,
    pod_rows,
    pod_workload,
    read_frame,
    read_inventory,
    write_frame,
)
from tests.services.kube_fake import FakeCoreV1Api, make_pod

EXAMPLE = Path(__file__).parents[3] / "gsv_pipelines" / "policies" / "deployed-images.example.yaml"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
# The minute a CronJob scheduled for 2026-11-27 00:00 UTC names its Job after.
CRON_MINUTES = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp()) // 60


@pytest.mark.parametrize(
    ("image_id", "reference"),
    [
        (
            f"docker-pullable://registry.gsv.example/platform/api@{A}",
            "registry.gsv.example/platform/api",
        ),
        (f"registry.gsv.example:5000/platform/api@{A}", "registry.gsv.example:5000/platform/api"),
        (f"docker.io/library/nginx@{A}", "docker.io/library/nginx"),
        (f"docker-pullable://nginx@{A}", "docker.io/library/nginx"),
        (f"bitnami/redis@{A}", "docker.io/bitnami/redis"),
        (f"localhost:5000/app@{A}", "localhost:5000/app"),
    ],
)
def test_every_image_id_form_gives_a_pullable_reference_and_the_digest(image_id, reference):
    assert parse_image_id(image_id) == (f"{reference}@{A}", A, None)


@pytest.mark.parametrize(
    ("image_id", "note"),
    [
        (f"docker://{A}", "the image's own ID, not a manifest digest"),
        (A, "the image's own ID, not a manifest digest"),
        ("", "no imageID yet"),
        (None, "no imageID yet"),
        ("registry.gsv.example/platform/api:1.2", "holds no manifest digest"),
        ("registry.gsv.example/platform/api@sha256:abc", "holds no manifest digest"),
    ],
)
def test_an_image_id_without_a_manifest_digest_says_why(image_id, note):
    reference, digest, why = parse_image_id(image_id)
    assert (reference, digest) == (None, None)
    assert note in why


@pytest.mark.parametrize(
    ("owner", "labels", "workload"),
    [
        (
            ("ReplicaSet", "api-7d9f8c6b5"),
            {"pod-template-hash": "7d9f8c6b5"},
            ("Deployment", "api"),
        ),
        (
            ("ReplicaSet", "api-7d9f8c6b5"),
            {"pod-template-hash": "other"},
            ("ReplicaSet", "api-7d9f8c6b5"),
        ),
        (("ReplicaSet", "standalone"), None, ("ReplicaSet", "standalone")),
        (("StatefulSet", "postgres"), None, ("StatefulSet", "postgres")),
        (("DaemonSet", "node-exporter"), None, ("DaemonSet", "node-exporter")),
        (("Job", f"nightly-report-{CRON_MINUTES}"), None, ("CronJob", "nightly-report")),
        (("Job", "migrate-20260101"), None, ("Job", "migrate-20260101")),
        (("Job", "migrate"), None, ("Job", "migrate")),
        (("Cluster", "platform-db"), None, ("Cluster", "platform-db")),
        (("Node", "node-1"), None, ("Pod", "the-pod")),
        (None, None, ("Pod", "the-pod")),
    ],
)
def test_the_workload_comes_from_the_pods_controller(owner, labels, workload):
    pod = make_pod("ns", "the-pod", owner=owner, labels=labels)
    metadata = ApiClient().sanitize_for_serialization(pod)["metadata"]
    assert pod_workload(metadata) == workload


def test_only_the_controller_owner_names_the_workload():
    metadata = {
        "name": "p",
        "ownerReferences": [
            {"kind": "ConfigMap", "name": "not-me"},
            {"kind": "StatefulSet", "name": "db", "controller": True},
        ],
    }
    assert pod_workload(metadata) == ("StatefulSet", "db")


def deployment_pods() -> list:
    rs = ("ReplicaSet", "api-5c4d")
    labels = {"pod-template-hash": "5c4d"}
    containers = [
        ("api", "registry.gsv.example/platform/api:1.2", f"registry.gsv.example/platform/api@{A}")
    ]
    return [
        make_pod(
            "platform",
            "api-5c4d-x1",
            owner=rs,
            labels=labels,
            containers=containers,
            init_containers=[
                (
                    "migrate",
                    "registry.gsv.example/platform/migrate:3",
                    f"docker-pullable://registry.gsv.example/platform/migrate@{C}",
                )
            ],
        ),
        make_pod(
            "platform",
            "api-5c4d-a2",
            owner=rs,
            labels=labels,
            containers=containers,
            init_containers=[
                (
                    "migrate",
                    "registry.gsv.example/platform/migrate:3",
                    f"docker-pullable://registry.gsv.example/platform/migrate@{C}",
                )
            ],
        ),
        # The rolling update's new ReplicaSet, on another digest.
        make_pod(
            "platform",
            "api-9e8f-b3",
            owner=("ReplicaSet", "api-9e8f"),
            labels={"pod-template-hash": "9e8f"},
            containers=[
                (
                    "api",
                    "registry.gsv.example/platform/api:1.3",
                    f"registry.gsv.example/platform/api@{B}",
                )
            ],
        ),
    ]


def frame_of(pods) -> pd.DataFrame:
    return cluster_deployed_images(FakeCoreV1Api(pods))


def test_replicas_merge_into_one_row_per_workload_container_and_digest():
    frame = frame_of(deployment_pods())
    assert list(frame.columns) == list(DEPLOYED_COLUMNS)
    rows = frame[
        ["workload_kind", "workload", "container", "container_type", "digest", "pod", "pods"]
    ]
    assert rows.to_dict("records") == [
        {
            "workload_kind": "Deployment",
            "workload": "api",
            "container": "api",
            "container_type": "container",
            "digest": A,
            "pod": "api-5c4d-a2",
            "pods": 2,
        },
        {
            "workload_kind": "Deployment",
            "workload": "api",
            "container": "api",
            "container_type": "container",
            "digest": B,
            "pod": "api-9e8f-b3",
            "pods": 1,
        },
        {
            "workload_kind": "Deployment",
            "workload": "api",
            "container": "migrate",
            "container_type": "init",
            "digest": C,
            "pod": "api-5c4d-a2",
            "pods": 2,
        },
    ]
    init = frame[frame["container"] == "migrate"].iloc[0]
    assert init["reference"] == f"registry.gsv.example/platform/migrate@{C}"
    assert init["image"] == "registry.gsv.example/platform/migrate:3"


def test_a_container_without_a_digest_is_kept_with_a_note():
    pods = [
        make_pod(
            "agents",
            "runtime-0",
            owner=("StatefulSet", "runtime"),
            phase="Pending",
            containers=[("runtime", "agents/runtime:2", "")],
            waiting="ContainerCreating",
        ),
        make_pod(
            "agents",
            "runtime-1",
            owner=("StatefulSet", "runtime"),
            phase="Pending",
            containers=[("runtime", "agents/runtime:2", None)],
        ),
        make_pod("dev", "scratch", containers=[("sh", "busybox", f"docker://{A}")]),
    ]
    frame = frame_of(pods)
    assert frame["digest"].isna().all()
    notes = dict(zip(frame["workload"], frame["note"], strict=True))
    assert (
        notes["runtime"] == "no imageID yet: the image is not pulled (waiting: ContainerCreating)"
    )
    assert frame.loc[frame["workload"] == "runtime", "pods"].item() == 2
    assert "not a manifest digest" in notes["scratch"]
    assert frame.loc[frame["workload"] == "scratch", "workload_kind"].item() == "Pod"


def test_a_container_with_no_status_yet_is_kept_too():
    pod = make_pod("agents", "new-pod", phase="Pending", containers=[("app", "agents/app:1", None)])
    [row] = pod_rows(pod)
    assert (row["digest"], row["note"], row["image"]) == (
        None,
        "no container status yet",
        "agents/app:1",
    )


def test_pods_as_api_json_give_the_same_rows_as_client_models():
    pods = deployment_pods()
    as_json = [ApiClient().sanitize_for_serialization(p) for p in pods]
    assert [r for p in as_json for r in pod_rows(p)] == [r for p in pods for r in pod_rows(p)]


def test_something_else_than_a_pod_is_refused():
    with pytest.raises(DeployedImagesError, match="not a pod: a object"):
        pod_rows(object())


def test_listing_pages_through_the_api_and_keeps_running_and_pending_pods():
    pods = [
        *deployment_pods(),
        make_pod("platform", "done", phase="Succeeded", containers=[("x", "x", f"x.io/x@{A}")]),
        make_pod("kube-system", "coredns", containers=[("coredns", "c", f"k8s.io/coredns@{A}")]),
        make_pod("platform", "pending", phase="Pending", containers=[("p", "p", f"x.io/p@{B}")]),
    ]
    api = FakeCoreV1Api(pods)
    frame = cluster_deployed_images(api, page_size=2, exclude_namespaces=["kube-*"])
    calls = [kw for _, kw in api.log]
    assert [c.get("_continue") for c in calls] == [None, "fake-continue-2", "fake-continue-4"]
    assert {c["limit"] for c in calls} == {2}
    assert {c["field_selector"] for c in calls} == {"status.phase!=Succeeded,status.phase!=Failed"}
    assert set(frame["workload"]) == {"api", "pending"}
    only = cluster_deployed_images(FakeCoreV1Api(pods), namespaces=["kube-system"])
    assert list(only["workload"]) == ["coredns"]


def test_an_expired_continue_token_restarts_the_listing_once():
    api = FakeCoreV1Api(deployment_pods(), errors={2: ApiException(status=410, reason="Gone")})
    frame = cluster_deployed_images(api, page_size=2)
    assert [kw.get("_continue") for _, kw in api.log] == [
        None,
        "fake-continue-2",
        None,
        "fake-continue-2",
    ]
    uninterrupted = cluster_deployed_images(FakeCoreV1Api(deployment_pods()), page_size=2)
    pd.testing.assert_frame_equal(
        frame.drop(columns="observed_at"), uninterrupted.drop(columns="observed_at")
    )

    twice = {2: ApiException(status=410, reason="Gone"), 4: ApiException(status=410, reason="Gone")}
    with pytest.raises(DeployedImagesError, match="cannot list pods: 410 Gone"):
        cluster_deployed_images(FakeCoreV1Api(deployment_pods(), errors=twice), page_size=2)


def test_api_errors_are_clear_and_carry_no_body():
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = '{"message": "pods is forbidden: User system:serviceaccount:dagster:gsv"}'
    with pytest.raises(DeployedImagesError) as error:
        cluster_deployed_images(FakeCoreV1Api([], errors={1: forbidden}))
    assert "forbidden (403)" in str(error.value)
    assert "serviceaccount" not in str(error.value)
    unreachable = MaxRetryError(None, "https://10.0.0.1/api/v1/pods")
    with pytest.raises(DeployedImagesError, match="unreachable"):
        cluster_deployed_images(FakeCoreV1Api([], errors={1: unreachable}))


# --- the inventory file ------------------------------------------------------------------


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "deployed-images.yaml"
    path.write_text(text)
    return path


def test_the_inventory_file_lists_pinned_images(tmp_path):
    path = write(
        tmp_path,
        f"""
- namespace: platform
  workload: agent-registry
  image: registry.gsv.example/platform/agent-registry@{A}
- namespace: platform
  workload: agent-registry
  image: registry.gsv.example/platform/agent-registry@{A}
- namespace: agents
  workload: runtime
  kind: StatefulSet
  container: main
  image: oci:/srv/layouts/runtime@{B}
""",
    )
    frame = read_inventory(path)
    assert list(frame.columns) == list(DEPLOYED_COLUMNS)
    assert frame[
        ["namespace", "workload_kind", "workload", "container", "reference", "digest"]
    ].to_dict("records") == [
        {
            "namespace": "agents",
            "workload_kind": "StatefulSet",
            "workload": "runtime",
            "container": "main",
            "reference": "oci:/srv/layouts/runtime",
            "digest": B,
        },
        {
            "namespace": "platform",
            "workload_kind": "Deployment",
            "workload": "agent-registry",
            "container": "agent-registry",
            "reference": f"registry.gsv.example/platform/agent-registry@{A}",
            "digest": A,
        },
    ]
    assert frame["pod"].isna().all() and frame["note"].isna().all()
    # What the file says stays in `image`; a layout is scanned as oci:<path>.
    assert list(frame["image"]) == [
        f"oci:/srv/layouts/runtime@{B}",
        f"registry.gsv.example/platform/agent-registry@{A}",
    ]


def test_the_shipped_example_is_a_valid_inventory():
    frame = read_inventory(EXAMPLE)
    assert len(frame) >= 3
    assert frame["digest"].str.fullmatch(r"sha256:[0-9a-f]{64}").all()


def test_an_empty_inventory_lists_nothing(tmp_path):
    frame = read_inventory(write(tmp_path, "# nothing deployed yet\n"))
    assert frame.empty and list(frame.columns) == list(DEPLOYED_COLUMNS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("platform: []", "expected a list of entries"),
        ("- [1, 2]", "entry 1: expected a mapping"),
        (f"- {{workload: w, image: 'r.io/a@{A}'}}", "entry 1: `namespace` is mandatory"),
        (
            f"- {{namespace: n, workload: w, image: 'r.io/a@{A}', replicas: 3}}",
            "entry 1: unknown key(s) replicas",
        ),
        ("- {namespace: n, workload: w}", "entry 1 (n/w): `image` is mandatory"),
        (
            "- {namespace: n, workload: w, image: 'r.io/a:1.0'}",
            "entry 1 (n/w): image 'r.io/a:1.0' is not pinned by digest",
        ),
        (
            f"- {{namespace: n, workload: ok, image: 'r.io/a@{A}'}}\n"
            f"- {{namespace: n, workload: w, image: 'nginx@{A}'}}",
            f"entry 2 (n/w): image 'nginx@{A}' must start with its registry host",
        ),
        (
            f"- {{namespace: n, workload: w, kind: '', image: 'r.io/a@{A}'}}",
            "entry 1 (n/w): `kind` must be",
        ),
        (f"- {{namespace: n, workload: w, image: 'oci:@{A}'}}", "names no OCI layout path"),
        ("- {namespace: n\n  workload: [", "is not valid YAML"),
    ],
)
def test_inventory_errors_name_the_file_and_the_entry(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as error:
        read_inventory(path)
    assert f"deployed-images file {path}" in str(error.value)
    assert message in str(error.value)


def test_a_missing_inventory_file_is_an_error_here(tmp_path):
    # The resource reads a missing file as "nothing deployed"; the parser itself is strict.
    with pytest.raises(InventoryError, match="cannot read deployed-images file"):
        read_inventory(tmp_path / "absent.yaml")


# --- frames in the store -----------------------------------------------------------------


def test_frames_are_stored_whole_and_the_newest_day_is_found(tmp_path):
    store = ArtefactStore(str(tmp_path / "store"))
    assert newest_deployed_key(store) is None
    frame = frame_of(deployment_pods())
    for day in ("2026-03-02", "2026-03-10", "2026-03-09"):
        stored = write_frame(store, deployed_key(day), frame)
    assert stored.key == "scanning/deployed/2026-03-09.parquet"
    assert store.hash(stored.key) == stored
    assert newest_deployed_key(store) == "scanning/deployed/2026-03-10.parquet"
    assert store.glob("scanning/deployed/*.partial") == []
    pd.testing.assert_frame_equal(read_frame(store, stored.key), frame)
    (tmp_path / "store" / "scanning" / "deployed" / "2026-03-11.parquet").write_bytes(b"PAR1 cut")
    with pytest.raises(DeployedImagesError, match="unreadable frame"):
        read_frame(store, deployed_key("2026-03-11"))
