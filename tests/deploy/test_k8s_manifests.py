"""deploy/k8s: rendered by kustomize (kubectl's), validated offline against the Kubernetes API
schemas and the pinned CRD schemas (tests/deploy/schemas.py), and read back: who may do what, how
the pods are hardened, where settings and credentials come from, who may talk to whom.

No API server can run here (DESIGN.md), so RBAC and NetworkPolicies are checked by reading them:
every grant the pipelines' service account receives, resolved through its bindings, must be
exactly the list below, and every egress path must lead to a system of the configuration
contract. A wider grant or a new path must change this test too.
"""

import json
import re
import shutil
import subprocess
import tomllib
from itertools import product
from pathlib import Path

import dagster as dg
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dagster_k8s.utils import get_common_labels

from gsv_pipelines import cli, exporter
from gsv_pipelines.lib.core.settings import SECRET_VARIABLES, load_settings
from gsv_pipelines.lib.rotation.policy import load_rotation_policy
from tests.deploy import schemas
from tests.deploy.test_helm_values import FULLNAME

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONSUMERS = K8S / "rotation-consumers"
PROMETHEUS = DEPLOY / "prometheus"
HELM_VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
NAMESPACE = "dagster"
SERVICE_ACCOUNT = "gsv-pipelines"
EXPORTER = "gsv-pipelines-metrics"
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


def _exporter(base: list[dict]) -> tuple[dict, dict]:
    pod = _one(base, "Deployment", EXPORTER)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def pod_labels(base: list[dict]) -> dict:
    return _one(base, "Deployment", SERVICE_ACCOUNT)["spec"]["template"]["metadata"]["labels"]


def _container_context(container: dict) -> dict:
    return json.loads(_env(container)["DAGSTER_CONTAINER_CONTEXT"]["value"])["k8s"]


def test_every_manifest_is_listed_in_its_kustomization():
    for folder in (K8S, CONSUMERS):
        listed = {p for p in schemas.listed_manifests(folder) if p.parent == folder}
        present = set(folder.glob("*.yaml")) - {folder / "kustomization.yaml"}
        assert listed == present, folder
    # The alert rules: deploy/prometheus's one PrometheusRule file, not a copy in deploy/k8s.
    assert [p for p in schemas.listed_manifests(K8S) if p.parent != K8S] == [
        PROMETHEUS / "prometheusrule.yaml"
    ]


def test_every_manifest_validates_strictly(base, consumers):
    files = schemas.listed_manifests(K8S) + schemas.listed_manifests(CONSUMERS)
    written = [doc for path in files for doc in schemas.load_yaml(path)]
    rendered = base + consumers
    assert len(written) == len(rendered)
    assert {(d["kind"], d["metadata"]["name"]) for d in written} == {
        (d["kind"], d["metadata"]["name"]) for d in rendered
    }
    for doc in written + rendered:
        schemas.validate(doc)
    assert {d["kind"] for d in rendered if schemas.is_custom(d)} == {
        "ExternalSecret",
        "ClusterSecretStore",
        "PrometheusRule",
        "ServiceMonitor",
    }
    # Strict means strict: a misspelt field is refused, not ignored, built-in or custom.
    _, container = _code_server(base)
    misspelt = json.loads(json.dumps(_one(base, "Deployment", SERVICE_ACCOUNT)))
    spelt = misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    spelt["readOnlyRootFileSystem"] = spelt.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        schemas.validate(misspelt)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secret = json.loads(json.dumps(_one(base, "ExternalSecret", "gsv-pipelines-secrets")))
    secret["spec"]["target"]["nmae"] = secret["spec"]["target"].pop("name")
    with pytest.raises(jsonschema.ValidationError, match="nmae"):
        schemas.validate(secret)
    store = json.loads(json.dumps(_one(base, "ClusterSecretStore", "gsv-pipelines-vault")))
    store["spec"]["provider"]["vault"]["version"] = "v3"
    with pytest.raises(jsonschema.ValidationError, match="v3"):
        schemas.validate(store)


def test_custom_resources_are_scoped_as_their_crds_say(base):
    for doc in (d for d in base if schemas.is_custom(d)):
        scope = schemas.crd_scope(doc["apiVersion"], doc["kind"])
        assert ("namespace" in doc["metadata"]) == (scope == "Namespaced"), doc["kind"]


PROMETHEUS_KINDS = {"PrometheusRule", "ServiceMonitor"}


def test_prometheus_documents_validate_against_their_crds(base):
    """The alerts domain's PrometheusRule and ServiceMonitor objects, wherever they are under
    deploy/, must be in the rendered set and valid against prometheus-operator's CRDs."""
    found = [
        doc
        for path in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
        for doc in schemas.load_yaml(path)
        if isinstance(doc, dict) and doc.get("kind") in PROMETHEUS_KINDS
    ]
    rendered = [d for d in base if d["kind"] in PROMETHEUS_KINDS]
    assert {(d["kind"], d["metadata"]["name"]) for d in found} == {
        (d["kind"], d["metadata"]["name"]) for d in rendered
    }, "a PrometheusRule or ServiceMonitor under deploy/ that kustomization.yaml does not list"
    for doc in rendered:
        schemas.validate(doc)
    # The pinned schemas themselves: a well-formed object passes, a misspelt one is refused.
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "example", "namespace": NAMESPACE},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0"}]}]},
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "example", "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "metrics"}]},
    }
    schemas.validate(rule)
    schemas.validate(monitor)
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = "up == 0"
    monitor["spec"]["endpoints"][0]["interval"] = 30
    for wrong in (rule, monitor):
        with pytest.raises(jsonschema.ValidationError):
            schemas.validate(wrong)


def test_everything_lands_in_the_dagster_namespace_or_a_consumer_s(base, consumers):
    cluster_wide = {"ClusterRole", "ClusterRoleBinding", "Namespace", "ClusterSecretStore"}
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
    assert _exporter(base)[1]["image"] == container["image"]


def test_settings_come_from_the_config_map_and_credentials_from_secrets(base):
    _, container = _code_server(base)
    config = _one(base, "ConfigMap", "gsv-pipelines-config")["data"]
    assert not set(config) & set(SECRET_VARIABLES)
    settings = load_settings(config)
    assert settings.is_prod and not settings.secrets_set
    # The partitions' first day is stated where the operator sets the install day, and read.
    assert settings.partitions_start.isoformat() == config["GSV_PARTITIONS_START"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "gsv-pipelines-config"}},
        {"secretRef": {"name": "gsv-pipelines-secrets"}},
        {"secretRef": {"name": "gsv-pipelines-notifications", "optional": True}},
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
    # The label the NetworkPolicies open the pipelines' paths for, as on the code server.
    assert context["labels"] == {"gsv/workload": pod_labels(base)["gsv/workload"]}
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


def test_the_namespace_enforces_pod_security_restricted(base):
    [namespace] = [d for d in base if d["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.32"
    # What admission would check: every pod template here passes the restricted profile.
    templates = [d["spec"]["template"]["spec"] for d in base if "template" in d.get("spec", {})]
    assert templates
    for pod in templates:
        assert schemas.restricted_violations(pod) == []
    # ... and the check is not blind: the hardening undone is named.
    pod, _ = _code_server(base)
    weakened = json.loads(json.dumps(pod))
    weakened["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    weakened["securityContext"].pop("seccompProfile")
    weakened["containers"][0]["securityContext"].pop("seccompProfile")
    weakened["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert schemas.restricted_violations(weakened) == [
        "volume host: ['hostPath']",
        "code-server: allowPrivilegeEscalation not false",
        "code-server: seccompProfile None",
    ]


# --- NetworkPolicies ----------------------------------------------------------------------------

# The systems the configuration contract names (README "Configuration", DESIGN.md), by the
# `gsv/egress-to` annotation of the policy that opens them, with the variable that addresses them.
CONTRACT_SYSTEMS = {
    "qdrant": "GSV_QDRANT_URL",
    "vault": "VAULT_ADDR",
    "postgresql": "GSV_PLATFORM_DB_URL",
    "registry": "GSV_REGISTRIES",
    "object-store": "GSV_BACKUP_URL",
    "slack": "GSV_SLACK_WEBHOOK_URL",
    "teams": "GSV_TEAMS_WEBHOOK_URL",
    "alert-webhook": "GSV_ALERT_WEBHOOK_URL",
}
ALERT_CHANNELS = {"slack", "teams", "alert-webhook"}
# Besides those: name resolution, the API server, and the code server and the Trivy server
# inside the namespace.
PLUMBING = {"dns", "kubernetes-api", "code-server", "trivy-server"}
# Who may reach what, per kind of pod in the namespace. The alert channels only from the code
# server, whose sensors send; the exporter only what it reads.
REACHES = {
    "code server": {"dns", "kubernetes-api", "trivy-server", *CONTRACT_SYSTEMS},
    "run and step pods": {
        "dns",
        "kubernetes-api",
        "trivy-server",
        *(set(CONTRACT_SYSTEMS) - ALERT_CHANNELS),
    },
    "exporter": {"dns", "postgresql", "object-store"},
    "trivy server": {"dns"},
    "dagster": {"dns", "kubernetes-api", "postgresql", "code-server"},
    "anything else": {"dns"},
}


def _policies(base: list[dict]) -> list[dict]:
    return [d for d in base if d["kind"] == "NetworkPolicy"]


def _selects(selector: dict, labels: dict) -> bool:
    """A label selector, as the API server evaluates it (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present, value = expression["key"] in labels, labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if (operator == "Exists") != present and operator in ("Exists", "DoesNotExist"):
            return False
    return True


def _pods(base: list[dict]) -> dict[str, dict]:
    """The labels of each kind of pod in the namespace: the code server's and the exporter's as
    rendered; run and step pods as dagster-k8s labels them (construct_dagster_k8s_job: its
    common labels, the component, the container context's `labels`); the chart's webserver and
    daemon as the chart labels them (release `dagster`) plus our values' `labels`; and a pod
    that carries none of ours."""
    chart = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "dagster"}
    _, container = _code_server(base)
    context_labels = _container_context(container)["labels"]
    exporter_labels = _one(base, "Deployment", EXPORTER)["spec"]["template"]["metadata"]
    return {
        "code server": pod_labels(base),
        "run pods": {
            **get_common_labels(),
            "app.kubernetes.io/component": "run_worker",
            **context_labels,
        },
        "run and step pods": {
            **get_common_labels(),
            "app.kubernetes.io/component": "step_worker",
            **context_labels,
        },
        "exporter": exporter_labels["labels"],
        "trivy server": _one(base, "Deployment", "gsv-trivy-server")["spec"]["template"][
            "metadata"
        ]["labels"],
        "dagster": {
            **chart,
            "component": "dagster-webserver",
            **HELM_VALUES["dagsterWebserver"]["labels"],
        },
        "dagster daemon": {
            **chart,
            "component": "dagster-daemon",
            **HELM_VALUES["dagsterDaemon"]["labels"],
        },
        "anything else": {"app.kubernetes.io/name": "something-else"},
    }


def test_everything_is_denied_first(base):
    deny = _one(base, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_every_egress_rule_leads_to_a_system_of_the_configuration_contract(base):
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    for variable in CONTRACT_SYSTEMS.values():
        assert f"`{variable}`" in table.split("\n## ")[0], variable
    egress = [p for p in _policies(base) if "Egress" in p["spec"]["policyTypes"]]
    for policy in egress:
        name, rules = policy["metadata"]["name"], policy["spec"].get("egress", [])
        if name == "default-deny":
            assert rules == []
            continue
        system = policy["metadata"]["annotations"]["gsv/egress-to"]
        assert system in {*CONTRACT_SYSTEMS, *PLUMBING}, name
        assert rules, name
        for rule in rules:
            # An empty `to` is every address, missing `ports` every port: neither is allowed.
            assert rule.get("to") and rule.get("ports"), name
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    prefix = int(peer["ipBlock"]["cidr"].split("/")[1])
                    assert prefix >= 24 and "except" not in peer["ipBlock"], name
                else:
                    assert "podSelector" in peer, f"{name}: a whole namespace is open"


def test_in_cluster_systems_are_reached_at_the_addresses_configured(base):
    config = _one(base, "ConfigMap", "gsv-pipelines-config")["data"]
    postgres = HELM_VALUES["postgresql"]
    configured = {
        "qdrant": config["GSV_QDRANT_URL"],
        "vault": config["VAULT_ADDR"],
        "postgresql": f"tcp://{postgres['postgresqlHost']}:{postgres['service']['port']}",
    }
    by_system = {
        p["metadata"]["annotations"]["gsv/egress-to"]: p["spec"]
        for p in _policies(base)
        if "gsv/egress-to" in p["metadata"].get("annotations", {})
    }
    for system, url in configured.items():
        host, port = re.fullmatch(r"\w+://([^:/]+):(\d+)/?", url).groups()
        _service, namespace, *_ = host.split(".")
        [rule] = by_system[system]["egress"]
        [peer] = rule["to"]
        assert peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}
        }, system
        assert [p["port"] for p in rule["ports"]] == [int(port)], system
        assert {p["protocol"] for p in rule["ports"]} == {"TCP"}
    # The object store, the registry, the alert channels and the API server are outside: HTTPS
    # (and 6443) only.
    for system, ports in (
        ("registry", [443]),
        ("object-store", [443]),
        *((channel, [443]) for channel in sorted(ALERT_CHANNELS)),
        ("kubernetes-api", [443, 6443]),
    ):
        [rule] = by_system[system]["egress"]
        assert [p["port"] for p in rule["ports"]] == ports, system
        assert [set(peer) for peer in rule["to"]] == [{"ipBlock"}], system


def test_nothing_else_is_reachable(base):
    pods = _pods(base)
    reach: dict[str, set[str]] = {}
    for kind, labels in pods.items():
        opened = {
            p["metadata"]["annotations"]["gsv/egress-to"]
            for p in _policies(base)
            if "Egress" in p["spec"]["policyTypes"]
            and p["spec"].get("egress")
            and _selects(p["spec"]["podSelector"], labels)
        }
        reach[kind] = opened
    assert reach.pop("dagster daemon") == reach["dagster"]
    assert reach.pop("run pods") == reach["run and step pods"]
    assert reach == REACHES


def test_ingress_only_from_the_ingress_controller_and_to_the_code_server_from_dagster(base):
    ingress = {
        p["metadata"]["name"]: p["spec"]
        for p in _policies(base)
        if "Ingress" in p["spec"]["policyTypes"]
    }
    assert set(ingress) == {
        "default-deny",
        "webserver-from-ingress-controller",
        "code-server-from-dagster",
        "metrics-from-prometheus",
        "trivy-server-from-pipelines",
    }
    pods = _pods(base)
    web = ingress["webserver-from-ingress-controller"]
    assert _selects(web["podSelector"], pods["dagster"])
    assert not _selects(web["podSelector"], pods["dagster daemon"])
    [rule] = web["ingress"]
    assert [p["port"] for p in rule["ports"]] == [
        HELM_VALUES["dagsterWebserver"]["service"]["port"]
    ]
    [peer] = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    code = ingress["code-server-from-dagster"]
    assert _selects(code["podSelector"], pods["code server"])
    assert not _selects(code["podSelector"], pods["exporter"])
    [rule] = code["ingress"]
    _, container = _code_server(base)
    assert [p["port"] for p in rule["ports"]] == [container["ports"][0]["containerPort"]]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    assert _selects(peer["podSelector"], pods["dagster"])
    assert _selects(peer["podSelector"], pods["dagster daemon"])
    assert not _selects(peer["podSelector"], pods["anything else"])
    # The Trivy server on its port, from the code location's pods (scans, the rescan sensor).
    trivy = ingress["trivy-server-from-pipelines"]
    assert [k for k, labels in pods.items() if _selects(trivy["podSelector"], labels)] == [
        "trivy server"
    ]
    [rule] = trivy["ingress"]
    server = _one(base, "Deployment", "gsv-trivy-server")["spec"]["template"]["spec"]
    [port] = server["containers"][0]["ports"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}
    reaching = [k for k, labels in pods.items() if _selects(peer["podSelector"], labels)]
    assert reaching == ["code server", "run pods", "run and step pods"]


# Prometheus's pods as the Prometheus Operator labels them (pkg/prometheus/server/statefulset.go:
# the operator's common labels plus the Prometheus object's name), for kube-prometheus-stack's
# `kube-prometheus-stack-prometheus` in `monitoring`.
PROMETHEUS_POD = {
    "app.kubernetes.io/name": "prometheus",
    "app.kubernetes.io/managed-by": "prometheus-operator",
    "app.kubernetes.io/instance": "kube-prometheus-stack-prometheus",
    "prometheus": "kube-prometheus-stack-prometheus",
    "operator.prometheus.io/name": "kube-prometheus-stack-prometheus",
}


def test_the_exporter_is_reached_from_prometheus_only(base):
    [policy] = [p for p in _policies(base) if p["metadata"]["name"] == "metrics-from-prometheus"]
    assert policy["metadata"]["annotations"] == {"gsv/ingress-from": "prometheus"}
    spec = policy["spec"]
    pods = _pods(base)
    assert [kind for kind, labels in pods.items() if _selects(spec["podSelector"], labels)] == [
        "exporter"
    ]
    [rule] = spec["ingress"]
    _, container = _exporter(base)
    [port] = container["ports"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    [peer] = rule["from"]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }
    assert _selects(peer["podSelector"], PROMETHEUS_POD)
    # Not Grafana or Alertmanager beside it, nor anything of the `dagster` namespace.
    grafana = {
        "app.kubernetes.io/name": "grafana",
        "app.kubernetes.io/instance": "kube-prometheus-stack",
    }
    alertmanager = {**PROMETHEUS_POD, "app.kubernetes.io/name": "alertmanager"}
    for other in (grafana, alertmanager, *pods.values()):
        assert not _selects(peer["podSelector"], other)


def test_the_webserver_keeps_a_replica_through_disruptions(base):
    budget = _one(base, "PodDisruptionBudget", "dagster-webserver")["spec"]
    assert _selects(budget["selector"], _pods(base)["dagster"])
    assert 0 < budget["minAvailable"] < HELM_VALUES["dagsterWebserver"]["replicaCount"]


# --- Credentials: ExternalSecrets from Vault -----------------------------------------------------

VAULT_LOGIN = {"VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"}
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.fixture(scope="module")
def notifier_variables() -> set[str]:
    """The variables the notifier resource is bound from (defs/resources.py), with every
    credential of the contract set."""
    with pytest.MonkeyPatch.context() as patch:
        for name in SECRET_VARIABLES:
            patch.setenv(name, "set")
        from gsv_pipelines.defs.resources import resources

        notifier = resources().resources["notifier"]
    values = [getattr(notifier, field) for field in type(notifier).model_fields]
    return {value.env_var_name for value in values if isinstance(value, dg.EnvVar)}


def test_the_pipelines_credentials_come_from_vault_through_one_store(base):
    config = _one(base, "ConfigMap", "gsv-pipelines-config")["data"]
    store = _one(base, "ClusterSecretStore", "gsv-pipelines-vault")["spec"]
    assert store["provider"]["vault"]["server"] == config["VAULT_ADDR"]
    assert store["provider"]["vault"]["version"] == "v2"
    # Only this namespace may read through the store.
    assert store["conditions"] == [{"namespaces": [NAMESPACE]}]
    # ESO logs in with its own service account, no stored credential.
    assert set(store["provider"]["vault"]["auth"]) == {"kubernetes"}

    secrets = [d for d in base if d["kind"] == "ExternalSecret"]
    for secret in secrets:
        spec = secret["spec"]
        assert spec["secretStoreRef"] == {
            "kind": "ClusterSecretStore",
            "name": "gsv-pipelines-vault",
        }
        assert spec["target"]["deletionPolicy"] == "Retain"
        # ESO's paths are not the pipelines' own: their token (deploy/vault) cannot read them.
        keys = [d["remoteRef"]["key"] for d in spec.get("data", [])]
        keys += [d["extract"]["key"] for d in spec.get("dataFrom", [])]
        assert keys and all(k.startswith("gsv-pipelines/") for k in keys)
    policy = (DEPLOY / "vault" / "gsv-pipelines.hcl").read_text()
    assert 'path "secret/data/gsv-pipelines' not in policy


def test_the_secret_of_the_pods_holds_the_contract_s_credentials(base, notifier_variables):
    _, container = _code_server(base)
    secret = _one(base, "ExternalSecret", "gsv-pipelines-secrets")["spec"]
    name = secret["target"]["name"]
    assert {"secretRef": {"name": name}} in container["envFrom"]
    assert _container_context(container)["env_secrets"] == [name]
    launcher = HELM_VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] == [{"name": name}]
    delivered = {item["secretKey"] for item in secret["data"]}
    # Every credential of the contract, but the Vault login (Kubernetes auth needs none) and the
    # alert channels (their own Secret, below), plus the backup store's S3 keys.
    assert delivered == (set(SECRET_VARIABLES) - VAULT_LOGIN - notifier_variables) | S3_KEYS
    assert "dataFrom" not in secret
    assert "VAULT_K8S_ROLE" in _one(base, "ConfigMap", "gsv-pipelines-config")["data"]


def _uses_the_notifier(definitions: dg.Definitions) -> list[str]:
    """Every asset, sensor, schedule and job op of the code location that requires `notifier`."""
    repository = definitions.get_repository_def()
    users = [
        key.to_user_string()
        for key, asset in repository.assets_defs_by_key.items()
        if "notifier" in asset.required_resource_keys
    ]
    for kind, objects in (
        ("sensor", repository.sensor_defs),
        ("schedule", repository.schedule_defs),
    ):
        users += [f"{kind} {o.name}" for o in objects if "notifier" in o.required_resource_keys]
    for job in repository.get_all_jobs():
        users += [
            f"job {job.name}: {node.name}"
            for node in job.all_node_defs
            if "notifier" in getattr(node, "required_resource_keys", ())
        ]
    return sorted(users)


def test_the_alert_channels_reach_the_code_server_alone(base, notifier_variables):
    """Only the alert sensors send, and sensors run in the code server: its pod gets the
    channels' Secret, optional as the channels are; no run, step or exporter pod does."""
    from gsv_pipelines.definitions import defs

    assert (
        notifier_variables
        == {
            "GSV_SLACK_WEBHOOK_URL",
            "GSV_TEAMS_WEBHOOK_URL",
            "GSV_ALERT_WEBHOOK_URL",
            "GSV_ALERT_WEBHOOK_SECRET",
        }
        <= set(SECRET_VARIABLES)
    )
    assert _uses_the_notifier(defs()) == [
        "sensor check_failure_alert_sensor",
        "sensor run_failure_alert_sensor",
    ]
    secret = _one(base, "ExternalSecret", "gsv-pipelines-notifications")["spec"]
    name = secret["target"]["name"]
    # The whole Vault entry, every key optional; nothing else comes with it.
    assert "data" not in secret
    assert secret["dataFrom"] == [{"extract": {"key": "gsv-pipelines/notifications"}}]
    _, container = _code_server(base)
    assert {"secretRef": {"name": name, "optional": True}} in container["envFrom"]
    context = _container_context(container)
    launcher = HELM_VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    _, metrics = _exporter(base)
    assert name not in context["env_secrets"] + [s["name"] for s in launcher["envSecrets"]]
    assert name not in json.dumps(metrics)


def test_the_instance_database_password_is_where_the_chart_and_the_code_server_read_it(base):
    _, container = _code_server(base)
    reference = _env(container)["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = _one(base, "ExternalSecret", reference["name"])["spec"]
    assert secret["target"]["name"] == reference["name"]
    assert [d["secretKey"] for d in secret["data"]] == [reference["key"]]
    assert HELM_VALUES["global"]["postgresqlSecretName"] == reference["name"]
    assert HELM_VALUES["generatePostgresqlPasswordSecret"] is False


# --- Metrics: the exporter, its Service, the ServiceMonitor, the alert rules ---------------------


def test_the_exporter_listens_on_the_port_its_pod_and_service_name(base):
    _, container = _exporter(base)
    command = container["command"]
    # `gsv` is the package's console script, and the arguments mean what its parser says.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] == "gsv" and scripts["gsv"] == "gsv_pipelines.cli:main"
    args = cli.parser().parse_args(command[1:])
    assert args.command == "metrics" and args.host == "0.0.0.0"
    listens = args.port or exporter.DEFAULT_PORT
    assert container["ports"] == [{"name": "metrics", "containerPort": listens, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "metrics"}, probe
    service = _one(base, "Service", EXPORTER)
    labels = _one(base, "Deployment", EXPORTER)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert not service["spec"]["selector"].items() <= pod_labels(base).items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": listens, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_the_service_monitor_scrapes_the_metrics_service_and_nothing_else(base):
    [monitor] = [d for d in base if d["kind"] == "ServiceMonitor"]
    spec = monitor["spec"]
    # Its own namespace's Services (no namespaceSelector), by labels: the metrics Service only.
    assert "namespaceSelector" not in spec
    assert monitor["metadata"]["namespace"] == NAMESPACE
    services = [d for d in base if d["kind"] == "Service"]
    selected = [d for d in services if _selects(spec["selector"], d["metadata"]["labels"])]
    assert [d["metadata"]["name"] for d in selected] == [EXPORTER]
    [service] = selected
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in spec["endpoints"]] == ["metrics"] and "metrics" in ports
    [endpoint] = spec["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    # The job label is the Service's name label: the job PipelineMetricsDown watches.
    job = service["metadata"]["labels"][spec["jobLabel"]]
    expressions = [rule.get("expr", "") for group in _rules(base) for rule in group["rules"]]
    assert f'up{{job="{job}"}}' in " ".join(expressions)


def _rules(base: list[dict]) -> list[dict]:
    [rule] = [d for d in base if d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def test_prometheus_selects_the_rules_and_the_monitor_by_one_release_label(base):
    """kube-prometheus-stack's default selectors match `release: <release>` on both kinds: the
    two carry the same one, and the rendered rules are deploy/prometheus/rules.yaml's."""
    [rule] = [d for d in base if d["kind"] == "PrometheusRule"]
    [monitor] = [d for d in base if d["kind"] == "ServiceMonitor"]
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]
    assert rule["spec"] == yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())


def test_the_exporter_is_hardened_and_given_only_what_it_reads(base):
    pod, container = _exporter(base)
    code_pod, code_server = _code_server(base)
    assert container["image"] == code_server["image"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod  # the namespace's default, without a token
    assert pod["securityContext"] == code_pod["securityContext"]
    assert container["securityContext"] == code_server["securityContext"]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}
    assert _one(base, "Deployment", EXPORTER)["spec"]["replicas"] == 1
    # Settings from the ConfigMap; of the credentials, only those it reads, each by reference.
    assert container["envFrom"] == [{"configMapRef": {"name": "gsv-pipelines-config"}}]
    env = _env(container)
    references = {
        name: item["valueFrom"]["secretKeyRef"] for name, item in env.items() if "valueFrom" in item
    }
    assert {n for n, item in env.items() if "value" in item} == {"DAGSTER_HOME"}
    secret = _one(base, "ExternalSecret", "gsv-pipelines-secrets")["spec"]
    delivered = {item["secretKey"] for item in secret["data"]}
    assert (
        references.pop("DAGSTER_PG_PASSWORD")
        == (_env(code_server)["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"])
    )
    assert references == {
        name: {"name": secret["target"]["name"], "key": name}
        for name in ("GSV_WAREHOUSE_URL", *sorted(S3_KEYS))
    }
    assert set(references) <= delivered
    # The instance: the chart's dagster.yaml, read-only at the chart's DAGSTER_HOME.
    home = env["DAGSTER_HOME"]["value"]
    assert home == HELM_VALUES["global"]["dagsterHome"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[home] == {"name": "dagster-instance", "mountPath": home, "readOnly": True}
    assert set(mounts) == {"/tmp", home}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dagster-instance"]["configMap"] == {
        "name": f"{FULLNAME}-instance",
        "items": [{"key": "dagster.yaml", "path": "dagster.yaml"}],
    }
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


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
    assert command[:3] == ["python", "-m", "gsv_pipelines.lib.scanning.trivy_server"]
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
