"""After a rotation: have the External Secrets Operator resync, then restart the Deployments.

A rotated secret reaches the workloads through Kubernetes Secrets that ESO copies from Vault on
its own schedule. `notify_consumers` shortens that wait for the consumers a secret's policy lists:

1. every ExternalSecret gets a new `force-sync` annotation; ESO reconciles an ExternalSecret
   whenever its annotations change, and re-reads Vault;
2. it waits until ESO reports each one synced again (condition Ready=True, and its record of
   the last sync, `status.refreshTime` / `status.syncedResourceVersion`, changed since the
   patch), so a restart cannot race the copy;
3. every Deployment gets a rollout restart, the way `kubectl rollout restart` does it: a new
   `kubectl.kubernetes.io/restartedAt` annotation on the pod template.

Each consumer is independent: all are tried, and the failures are raised together afterwards as
one `ConsumerError` naming each object. Messages carry HTTP status and reason, never a body.
"""

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gsv_pipelines.lib.rotation.policy import Consumers

# ExternalSecret's API. ESO serves `v1` since 0.16 and stopped serving `v1beta1` in 0.17.
ESO_GROUP = "external-secrets.io"
ESO_VERSION = "v1"
ESO_PLURAL = "externalsecrets"
# The annotation ESO's documentation uses to trigger a refresh (any annotation change would do).
FORCE_SYNC_ANNOTATION = "force-sync"
# What `kubectl rollout restart` sets on the pod template.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# Both patches are JSON merge patches (RFC 7386): only the one annotation changes.
MERGE_PATCH = "application/merge-patch+json"

KUBE_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


class ConsumerError(RuntimeError):
    """Some consumers of a rotated secret were not updated; the message names each one."""


def force_sync_patch(now: datetime) -> dict[str, Any]:
    return {"metadata": {"annotations": {FORCE_SYNC_ANNOTATION: str(int(now.timestamp()))}}}


def restart_patch(now: datetime) -> dict[str, Any]:
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}}}


def _why(exc: Exception, kind: str) -> str:
    if not isinstance(exc, ApiException):
        return f"the Kubernetes API is unreachable ({type(exc).__name__})"
    if exc.status == 403:
        return f"forbidden (403): the service account may not use this {kind}"
    if exc.status == 404 and kind == "ExternalSecret":
        return f"not found (404), or {ESO_GROUP}/{ESO_VERSION} not served (ESO older than 0.16)"
    return f"{exc.status} {exc.reason}"


def _last_sync(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    # ESO sets both, and only these, when a sync succeeds. refreshTime alone has one-second
    # resolution; syncedResourceVersion hashes the annotations, so it changes with force-sync.
    status = obj.get("status") or {}
    return status.get("refreshTime"), status.get("syncedResourceVersion")


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def _await_resync(
    custom_api: Any,
    before: dict[tuple[str, str], tuple[str | None, str | None]],
    attempts: int,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> dict[tuple[str, str], str | None]:
    """Poll the patched ExternalSecrets; each maps to None (synced) or why it is not."""
    outcome: dict[tuple[str, str], str | None] = {}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    pending = list(before)
    for attempt in range(attempts + 1):
        for namespace, name in list(pending):
            try:
                obj = custom_api.get_namespaced_custom_object(
                    group=ESO_GROUP,
                    version=ESO_VERSION,
                    namespace=namespace,
                    plural=ESO_PLURAL,
                    name=name,
                )
            except KUBE_ERRORS as exc:
                outcome[(namespace, name)] = f"status unreadable: {_why(exc, 'ExternalSecret')}"
                pending.remove((namespace, name))
                continue
            last[(namespace, name)] = obj
            synced_again = _last_sync(obj) != before[(namespace, name)]
            if synced_again and _ready(obj).get("status") == "True":
                outcome[(namespace, name)] = None
                pending.remove((namespace, name))
        if not pending:
            break
        if attempt < attempts:
            sleep(poll_seconds)
    for key in pending:
        ready = _ready(last.get(key, {}))
        outcome[key] = (
            f"not resynced within the timeout (Ready={ready.get('status', 'unknown')}, "
            f"reason {ready.get('reason', 'none')}; spec.refreshPolicy CreatedOnce never resyncs)"
        )
    return outcome


def notify_consumers(
    consumers: Consumers,
    *,
    custom_api: Any,
    apps_api: Any,
    now: datetime,
    record: Callable[..., None],
    sync_timeout_seconds: float = 120.0,
    poll_seconds: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Resync the ExternalSecrets, then restart the Deployments; return what was done.

    `custom_api` / `apps_api` are kubernetes' CustomObjectsApi / AppsV1Api (see
    `kubernetes_apis`); `now` (timezone-aware) stamps the annotations; `record` is called as
    `record("consumer_resynced", kind=..., namespace=..., object_name=...)` for each consumer
    updated (`object_name`, not `name`: `Journal.record` takes the step's name as `name`).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    done: list[str] = []
    failures: list[str] = []

    before: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for namespace, name in consumers.external_secrets:
        try:
            patched = custom_api.patch_namespaced_custom_object(
                group=ESO_GROUP,
                version=ESO_VERSION,
                namespace=namespace,
                plural=ESO_PLURAL,
                name=name,
                body=force_sync_patch(now),
                _content_type=MERGE_PATCH,
            )
        except KUBE_ERRORS as exc:
            failures.append(f"ExternalSecret {namespace}/{name}: {_why(exc, 'ExternalSecret')}")
            continue
        # The patch answers with the object as ESO left it before this change.
        before[(namespace, name)] = _last_sync(patched)

    attempts = math.ceil(sync_timeout_seconds / poll_seconds)
    resynced = _await_resync(custom_api, before, attempts, poll_seconds, sleep) if before else {}
    for namespace, name in before:
        problem = resynced[(namespace, name)]
        if problem:
            failures.append(f"ExternalSecret {namespace}/{name}: {problem}")
            continue
        record("consumer_resynced", kind="ExternalSecret", namespace=namespace, object_name=name)
        done.append(f"ExternalSecret {namespace}/{name} resynced")

    for namespace, name in consumers.deployments:
        try:
            apps_api.patch_namespaced_deployment(
                name=name, namespace=namespace, body=restart_patch(now), _content_type=MERGE_PATCH
            )
        except KUBE_ERRORS as exc:
            failures.append(f"Deployment {namespace}/{name}: {_why(exc, 'Deployment')}")
            continue
        record("consumer_resynced", kind="Deployment", namespace=namespace, object_name=name)
        done.append(f"Deployment {namespace}/{name} restarted")

    if failures:
        total = len(consumers.external_secrets) + len(consumers.deployments)
        raise ConsumerError(
            f"{len(failures)} of {total} consumer(s) not updated: {'; '.join(failures)}"
            + (f" (done: {'; '.join(done)})" if done else "")
        )
    return done


def kubernetes_apis() -> tuple[client.CustomObjectsApi, client.AppsV1Api]:
    """CustomObjectsApi and AppsV1Api from the pod's service account, else from the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration, persist_config=False)
        except (config.ConfigException, OSError) as exc:
            raise ConsumerError(
                f"no Kubernetes configuration: not in a cluster, and no usable kubeconfig ({exc})"
            ) from None
    api = client.ApiClient(configuration)
    return client.CustomObjectsApi(api), client.AppsV1Api(api)
