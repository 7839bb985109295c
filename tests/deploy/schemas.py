"""The published schemas the deploy tests validate against, offline (tests/data/k8s/README.md):
the Kubernetes API's (kubernetes-validate's bundled copies), the custom resources' CRDs, and the
Dagster Helm chart's values.schema.json; plus the Pod Security `restricted` profile, as rules.

No API server can run here (DESIGN.md). Each validator stands for one thing a real cluster (or
Helm) does on apply, and says which in its docstring.
"""

import copy
import functools
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import referencing
import yaml

DATA = Path(__file__).resolve().parents[1] / "data" / "k8s"
# The oldest Kubernetes the manifests are meant for: native gRPC probes are GA since 1.27.
KUBERNETES_VERSION = "1.32.0"
# The kinds whose CRDs are pinned here, by apiVersion and kind.
CUSTOM_KINDS = {
    ("external-secrets.io/v1", "ExternalSecret"): "externalsecrets.external-secrets.io.v1.json",
    ("external-secrets.io/v1", "ClusterSecretStore"): (
        "clustersecretstores.external-secrets.io.v1.json"
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules.monitoring.coreos.com.v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors.monitoring.coreos.com.v1.json",
}
CHART_SCHEMA = DATA / "dagster-chart.values.schema.json"
# Where the chart's schema points for Kubernetes types (a site that no longer serves them).
CHART_K8S_DEFINITIONS = "https://kubernetesjsonschema.dev/v1.18.0/_definitions.json"


def is_custom(doc: dict) -> bool:
    """A custom resource: its API group is a domain that is not Kubernetes' own (`*.k8s.io`)."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


@functools.cache
def _k8s_definitions() -> dict:
    """kubernetes-validate's strict definitions for KUBERNETES_VERSION (under `$defs`): every
    object closed (additionalProperties: false), as the API server's strict field validation is."""
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = folder / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json"
    return json.loads(path.read_text())["$defs"]


def _strict(schema: dict) -> dict:
    """A CRD's structural schema as the API server applies it with strict field validation
    (kubectl's default since 1.27): an unknown field is refused, except under
    x-kubernetes-preserve-unknown-fields."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@functools.cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    pinned = json.loads((DATA / CUSTOM_KINDS[(api_version, kind)]).read_text())
    assert f"{pinned['group']}/{pinned['version']}" == api_version
    assert pinned["kind"] == kind
    return jsonschema.Draft7Validator(_strict(pinned["openAPIV3Schema"]))


def crd_scope(api_version: str, kind: str) -> str:
    return json.loads((DATA / CUSTOM_KINDS[(api_version, kind)]).read_text())["scope"]


def validate(doc: dict) -> None:
    """What the API server checks on apply: a built-in kind against the Kubernetes API's schema
    (strict), a custom resource against its CRD's OpenAPI schema (strict) with its metadata as
    an ObjectMeta. CEL rules (x-kubernetes-validations) and admission webhooks are not run."""
    if not is_custom(doc):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return
    key = (doc["apiVersion"], doc["kind"])
    assert key in CUSTOM_KINDS, f"no pinned CRD schema for {key}"
    errors = [e.message for e in _crd_validator(*key).iter_errors(doc)]
    meta = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    meta["$defs"] = _k8s_definitions()
    errors += [
        e.message for e in jsonschema.Draft202012Validator(meta).iter_errors(doc["metadata"])
    ]
    if errors:
        raise jsonschema.ValidationError(f"{doc['kind']} {doc['metadata'].get('name')}: {errors}")


# --- The Dagster chart's values.schema.json -----------------------------------------------------


@functools.cache
def chart_schema() -> dict:
    return json.loads(CHART_SCHEMA.read_text())


def _without_required(node):
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


@functools.cache
def _chart_registry() -> referencing.Registry:
    # The chart points into `definitions`, the Kubernetes copy's own references into `$defs`.
    definitions = referencing.jsonschema.DRAFT202012.create_resource(
        {"definitions": _k8s_definitions(), "$defs": _k8s_definitions()}
    )
    return referencing.Registry().with_resource(CHART_K8S_DEFINITIONS, definitions)


def chart_validator() -> jsonschema.Draft202012Validator:
    """What `helm install` checks before rendering: the values against the chart's schema, with
    the Kubernetes types it references resolved to the strict definitions of the Kubernetes we
    target (its own reference is to a v1.18 copy on a site that is gone). `required` is dropped:
    Helm checks it on the merge of the chart's default values.yaml and ours, and the defaults
    fill what ours leave out. 2020-12 keeps a `$ref`'s sibling keywords, as Helm's validator."""
    schema = _without_required(chart_schema())
    return jsonschema.Draft202012Validator(schema, registry=_chart_registry())


def _is_object(schema: dict) -> bool:
    kind = schema.get("type")
    return kind is None or kind == "object" or (isinstance(kind, list) and "object" in kind)


def _branches(schema: dict, resolver) -> Iterator[tuple[dict, object]]:
    """A schema, what its `$ref` points to, and its anyOf/oneOf/allOf options: everything that
    may declare a key (2020-12 applies a `$ref` together with its sibling keywords)."""
    yield schema, resolver
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        yield from _branches(resolved.contents, resolved.resolver)
    for keyword in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(keyword, []):
            yield from _branches(option, resolver)


def undeclared_keys(values, free_form: set[str]) -> tuple[list[str], set[str]]:
    """Every key path in `values` that the chart's schema does not declare, and the free-form
    paths reached (an object the schema leaves open: `type: object` and nothing else). The schema
    lets such objects hold anything, so a misspelt key there would pass Helm: each is listed by
    the caller with what else checks it. A key under a map (`additionalProperties: {schema}`,
    e.g. labels) is a value, not a name, and is checked against that schema."""
    registry = _chart_registry().with_resource(
        "urn:chart", referencing.jsonschema.DRAFT202012.create_resource(chart_schema())
    )
    undeclared: list[str] = []
    reached: set[str] = set()

    def walk(value, schema, resolver, path):
        branches = list(_branches(schema, resolver))
        if isinstance(value, list):
            for i, item in enumerate(value):
                for branch, res in branches:
                    if "items" in branch:
                        walk(item, branch["items"], res, f"{path}[{i}]")
                        break
            return
        if not isinstance(value, dict):
            return
        objects = [(b, r) for b, r in branches if _is_object(b)]
        if path in free_form:
            reached.add(path)
            return
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            declared = [
                (b["properties"][key], r) for b, r in objects if key in b.get("properties", {})
            ]
            maps = [
                (b["additionalProperties"], r)
                for b, r in objects
                if isinstance(b.get("additionalProperties"), dict)
            ]
            if declared:
                walk(item, *declared[0], child)
            elif maps:
                walk(item, *maps[0], child)
            else:
                undeclared.append(child)

    root = registry.resolver(base_uri="urn:chart")
    walk(values, chart_schema(), root, "")
    return undeclared, reached


# --- Pod Security admission, `restricted` profile ------------------------------------------------

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict) -> list[str]:
    """What Pod Security admission refuses in a namespace labelled `enforce: restricted`
    (Kubernetes' Pod Security Standards, restricted, as of v1.32), for one pod spec (camelCase)."""
    found = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    pod_context = pod.get("securityContext", {})
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    for container in containers:
        name = container["name"]
        context = container.get("securityContext", {})

        def setting(key, context=context):
            return context.get(key, pod_context.get(key))

        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        if setting("runAsNonRoot") is not True:
            found.append(f"{name}: runAsNonRoot not true")
        if setting("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (setting("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added {capabilities['add']}")
        if container.get("ports") and any(p.get("hostPort") for p in container["ports"]):
            found.append(f"{name}: hostPort")
    return found


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def listed_manifests(folder: Path) -> list[Path]:
    """The files a Kustomization's `resources` name, following the folders it names (other
    Kustomizations, such as deploy/prometheus from deploy/k8s), as kustomize reads them."""
    files = []
    for entry in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]:
        path = (folder / entry).resolve()
        files += listed_manifests(path) if path.is_dir() else [path]
    return files
