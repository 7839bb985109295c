"""deploy/k8s: rendered by kustomize (kubectl's), validated against the Kubernetes API schemas
offline, and read back: who may do what, how the pods are hardened, where settings come from.

No API server can run here (DESIGN.md), so RBAC is checked by reading it: every grant the
pipelines' service account receives, resolved through its bindings, must be exactly the list
below. A wider grant must change this test too.
"""

import json
import re
import shutil
import subprocess
from itertools import product
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gsv_pipelines.lib.rotation_policy import load_rotation_policy
from gsv_pipelines.lib.settings import SECRET_VARIABLES, load_settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
CONSUMERS = K8S / "rotation-consumers"
# The oldest Kubernetes the manifests are meant for: native gRPC probes are GA since 1.27.
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "dagster"
SERVICE_ACCOUNT = "gsv-pipelines"
UID = 10001

# (where, API group, resource, verb, object name): "*" is every namespace or every name.
STEP_JOBS = {
    (NAMESPACE, "batch", "jobs", "create", "*"),
    (NAMESPACE, "batch", "jobs", "delete", "*"),
    (NAMESPACE, "batch", "jobs/status", "get", "*"),
    (NAMESPACE, "", "pods", "get", "*"),
    (NAMESPACE, "", "pods", "list", "*"),
    (NAMESPACE, "", "pods", "delete", "*"),
}
POD_INVENTORY = {("*", "", "pods", "list", "*")}
ROTATION = {
    *(
        ("platform", "external-secrets.io", "externalsecrets", verb, name)
        for verb, name in product(
            ("get", "patch"), ("agent-registry-db", "webhook-hmac", "keycloak-client")
        )
    ),
    ("qdrant", "external-secrets.io", "externalsecrets", "get", "qdrant-api-key"),
    ("qdrant", "external-secrets.io", "externalsecrets", "patch", "qdrant-api-key"),
    ("qdrant", "apps", "deployments", "patch", "qdrant"),
}


def _kustomize(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: its `kubectl kustomize` renders deploy/k8s"
    done = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {folder}: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return _kustomize(K8S)


@pytest.fixture(scope="module")
def consumers() -> list[dict]:
    return _kustomize(CONSUMERS)


def _one(docs: list[dict], kind: str, name: str) -> dict:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _code_server(base: list[dict]) -> tuple[dict, dict]:
    pod = _one(base, "Deployment", SERVICE_ACCOUNT)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _container_context(container: dict) -> dict:
    return json.loads(_env(container)["DAGSTER_CONTAINER_CONTEXT"]["value"])["k8s"]


def test_every_manifest_is_listed_in_its_kustomization():
    for kustomization in (K8S / "kustomization.yaml", CONSUMERS / "kustomization.yaml"):
        folder = kustomization.parent
        listed = set(yaml.safe_load(kustomization.read_text())["resources"])
        present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, folder


def test_every_manifest_validates_strictly(base, consumers):
    files = [p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"]
    written = [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
    rendered = base + consumers
    assert len(written) == len(rendered) == 15
    for doc in written + rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # Strict means strict: a misspelt field is refused, not ignored.
    _, container = _code_server(base)
    misspelt = json.loads(json.dumps(_one(base, "Deployment", SERVICE_ACCOUNT)))
    spelt = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    spelt["readOnlyRootFileSystem"] = spelt.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_everything_lands_in_the_dagster_namespace_or_a_consumer_s(base, consumers):
    cluster_wide = {"ClusterRole", "ClusterRoleBinding"}
    assert {d["metadata"].get("namespace") for d in base if d["kind"] not in cluster_wide} == {
        NAMESPACE
    }
    assert all("namespace" not in d["metadata"] for d in base if d["kind"] in cluster_wide)
    assert yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"] == NAMESPACE
    assert {d["metadata"]["namespace"] for d in consumers} == {"platform", "qdrant"}


def _grants(docs: list[dict]) -> set[tuple[str, str, str, str, str]]:
    """Every (where, group, resource, verb, name) the service account gets through a binding;
    fails on a binding that names any other subject."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    grants = set()
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
        ], binding["metadata"]["name"]
        where = binding["metadata"].get("namespace", "*")
        ref = binding["roleRef"]
        role_namespace = None if ref["kind"] == "ClusterRole" else where
        role = roles.pop((ref["kind"], role_namespace, ref["name"]))
        for rule in role["rules"]:
            grants |= set(
                product(
                    [where],
                    rule["apiGroups"],
                    rule["resources"],
                    rule["verbs"],
                    rule.get("resourceNames", ["*"]),
                )
            )
    assert not roles, f"roles bound to nobody: {sorted(roles)}"
    return grants


def test_rbac_grants_exactly_what_the_pipelines_call(base, consumers):
    assert _grants(base) == STEP_JOBS | POD_INVENTORY
    assert _grants(consumers) == ROTATION
    everything = _grants(base + consumers)
    assert not [g for g in everything if "*" in g[1:4]]  # no wildcard group, resource or verb
    assert not [g for g in everything if g[2] in ("secrets", "pods/exec", "roles", "rolebindings")]


def test_rotation_grants_match_the_shipped_rotation_policy(consumers):
    wanted = set()
    for secret in load_rotation_policy().secrets:
        for namespace, name in secret.consumers.external_secrets:
            wanted |= {
                (namespace, "external-secrets.io", "externalsecrets", verb, name)
                for verb in ("get", "patch")
            }
        for namespace, name in secret.consumers.deployments:
            wanted.add((namespace, "apps", "deployments", "patch", name))
    assert _grants(consumers) == wanted


def test_the_code_server_is_hardened(base):
    pod, container = _code_server(base)
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["automountServiceAccountToken"] is False
    assert _one(base, "ServiceAccount", SERVICE_ACCOUNT)["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}
    # Every writable path is a volume, since the root filesystem is not.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", "/var/lib/gsv": "data"}
    assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} == {"tmp", "data"}


def test_the_code_server_serves_gsv_pipelines_and_is_probed_over_grpc(base):
    _, container = _code_server(base)
    command = container["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("--module-name") + 1] == "gsv_pipelines.definitions"
    assert command[command.index("--location-name") + 1] == "gsv_pipelines"
    port = int(command[command.index("--port") + 1])
    assert container["ports"] == [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port, "service": "DagsterApi"}, probe
    service = _one(base, "Service", SERVICE_ACCOUNT)
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP"}
    ]
    labels = _one(base, "Deployment", SERVICE_ACCOUNT)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_image_is_pinned_by_digest_and_runs_start_from_it(base):
    _, container = _code_server(base)
    assert re.fullmatch(r"[a-z0-9.\-/]+@sha256:[0-9a-f]{64}", container["image"])
    assert _env(container)["DAGSTER_CURRENT_IMAGE"]["value"] == container["image"]


def test_settings_come_from_the_config_map_and_credentials_from_secrets(base):
    _, container = _code_server(base)
    config = _one(base, "ConfigMap", "gsv-pipelines-config")["data"]
    assert not set(config) & set(SECRET_VARIABLES)
    settings = load_settings(config)
    assert settings.is_prod and not settings.secrets_set
    assert container["envFrom"] == [
        {"configMapRef": {"name": "gsv-pipelines-config"}},
        {"secretRef": {"name": "gsv-pipelines-secrets"}},
    ]
    # Any other value reaches the pod by reference, never inline.
    for name, item in _env(container).items():
        assert name not in SECRET_VARIABLES
        assert ("value" in item) == (name in ("DAGSTER_CURRENT_IMAGE", "DAGSTER_CONTAINER_CONTEXT"))


def test_run_and_step_pods_get_the_identity_settings_and_hardening(base):
    pod, container = _code_server(base)
    context = _container_context(container)
    assert context["service_account_name"] == SERVICE_ACCOUNT
    assert context["env_config_maps"] == [container["envFrom"][0]["configMapRef"]["name"]]
    assert context["env_secrets"] == [container["envFrom"][1]["secretRef"]["name"]]
    assert context["security_context"] == container["securityContext"]
    run_pod = context["run_k8s_config"]["pod_spec_config"]
    assert run_pod["security_context"] == pod["securityContext"]
    # They call the API (step Jobs, the inventory, rotations): they, and only they, get a token.
    assert run_pod["automount_service_account_token"] is True
    for bound in ("requests", "limits"):
        assert set(context["resources"][bound]) == {"cpu", "memory"}

    config = _one(base, "ConfigMap", "gsv-pipelines-config")["data"]
    claim = _one(base, "PersistentVolumeClaim", "gsv-pipelines-trivy-cache")
    volumes = {v["name"]: v for v in context["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in context["volume_mounts"]}
    assert mounts == {
        "/tmp": "tmp",
        config["GSV_DATA_DIR"]: "data",
        config["TRIVY_CACHE_DIR"]: "trivy-cache",
    }
    assert volumes["trivy-cache"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["data"]


def test_scans_reach_one_hardened_trivy_server_on_the_shared_cache(base):
    deployment = _one(base, "Deployment", "gsv-trivy-server")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    _, code_server = _code_server(base)
    config = _one(base, "ConfigMap", "gsv-pipelines-config")["data"]
    # One server per cache, the old one gone before the new one starts.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # The code location's own image, its supervisor, on the port the Service and the setting name.
    assert container["image"] == code_server["image"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "gsv_pipelines.lib.trivy_server"]
    port = int(command[command.index("--listen") + 1].rpartition(":")[2])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = _one(base, "Service", "gsv-trivy-server")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert config["GSV_TRIVY_SERVER_URL"] == f"http://{service['metadata']['name']}:{port}"
    # Hardened like the code server, and no token: it never calls the Kubernetes API.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == _code_server(base)[0]["securityContext"]
    assert container["securityContext"] == code_server["securityContext"]
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}
    # The published DBs from the shared claim, where TRIVY_CACHE_DIR says; its copy on its disk.
    claim = _one(base, "PersistentVolumeClaim", "gsv-pipelines-trivy-cache")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    work = command[command.index("--work-dir") + 1]
    assert mounts == {config["TRIVY_CACHE_DIR"]: "trivy-cache", work: "work", "/tmp": "tmp"}
    assert volumes["trivy-cache"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "emptyDir" in volumes["work"] and "emptyDir" in volumes["tmp"]
    # Settings from the ConfigMap, the clients' token from the Secret, by reference only.
    assert container["envFrom"] == [{"configMapRef": {"name": "gsv-pipelines-config"}}]
    assert container["env"] == [
        {
            "name": "GSV_TRIVY_SERVER_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": "gsv-pipelines-secrets", "key": "GSV_TRIVY_SERVER_TOKEN"}
            },
        }
    ]
    assert "GSV_TRIVY_SERVER_TOKEN" in SECRET_VARIABLES
