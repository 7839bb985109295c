"""Fakes of the Kubernetes API (no API server can run here): for the rotation consumers hook, and
for listing the pods whose images run (scanning/deployed_images)."""

from collections import Counter
from collections.abc import Sequence
from typing import Any

from gsv_pipelines.lib.rotation.consumers import ESO_GROUP, ESO_VERSION


def _status(refresh_time: str, resource_version: str, ready: str, reason: str) -> dict[str, Any]:
    return {
        "refreshTime": refresh_time,
        "syncedResourceVersion": resource_version,
        "conditions": [{"type": "Ready", "status": ready, "reason": reason}],
    }


SYNCED_BEFORE = _status("2025-03-04T02:00:00Z", "1-aaaa", "True", "SecretSynced")
SYNCED_AFTER = _status("2025-03-04T03:06:09Z", "1-bbbb", "True", "SecretSynced")
SYNC_FAILED = _status("2025-03-04T02:00:00Z", "1-aaaa", "False", "SecretSyncedError")


class FakeCustomObjectsApi:
    """A fake of kubernetes' CustomObjectsApi, playing the External Secrets Operator too.

    A fake because no Kubernetes API server (nor ESO) can run here. It records every call; a
    patch answers with the ExternalSecret as ESO last left it, and reads report a new sync from
    the `sync_after`-th read on. `fail_patch` / `fail_read` map (namespace, name) to the
    exception that call raises; `stuck` maps (namespace, name) to a status that never changes.
    """

    def __init__(
        self,
        *,
        sync_after: int = 1,
        fail_patch: dict[tuple[str, str], Exception] | None = None,
        fail_read: dict[tuple[str, str], Exception] | None = None,
        stuck: dict[tuple[str, str], dict[str, Any]] | None = None,
        log: list[tuple] | None = None,
    ) -> None:
        self.sync_after = sync_after
        self.fail_patch = fail_patch or {}
        self.fail_read = fail_read or {}
        self.stuck = stuck or {}
        self.log = log if log is not None else []
        self.reads: Counter[tuple[str, str]] = Counter()

    def _object(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{ESO_GROUP}/{ESO_VERSION}",
            "kind": "ExternalSecret",
            "metadata": {"namespace": namespace, "name": name},
            "status": status,
        }

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kw):
        self.log.append(("patch_es", group, version, namespace, plural, name, body, kw))
        if (namespace, name) in self.fail_patch:
            raise self.fail_patch[(namespace, name)]
        return self._object(namespace, name, self.stuck.get((namespace, name), SYNCED_BEFORE))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        self.log.append(("read_es", group, version, namespace, plural, name))
        if (namespace, name) in self.fail_read:
            raise self.fail_read[(namespace, name)]
        self.reads[(namespace, name)] += 1
        if (namespace, name) in self.stuck:
            return self._object(namespace, name, self.stuck[(namespace, name)])
        synced = self.reads[(namespace, name)] >= self.sync_after
        return self._object(namespace, name, SYNCED_AFTER if synced else SYNCED_BEFORE)


class FakeAppsV1Api:
    """A fake of kubernetes' AppsV1Api (no Kubernetes API server can run here): it records each
    patch of a Deployment and raises for the ones in `fail`."""

    def __init__(
        self,
        *,
        fail: dict[tuple[str, str], Exception] | None = None,
        log: list[tuple] | None = None,
    ) -> None:
        self.fail = fail or {}
        self.log = log if log is not None else []

    def patch_namespaced_deployment(self, name, namespace, body, **kw):
        self.log.append(("patch_deployment", namespace, name, body, kw))
        if (namespace, name) in self.fail:
            raise self.fail[(namespace, name)]
        return {"metadata": {"namespace": namespace, "name": name}}


def make_pod(
    namespace: str,
    name: str,
    *,
    phase: str = "Running",
    owner: tuple[str, str] | None = None,
    labels: dict[str, str] | None = None,
    containers: Sequence[tuple[str, str, str | None]] = (),
    init_containers: Sequence[tuple[str, str, str | None]] = (),
    waiting: str | None = None,
) -> Any:
    """A kubernetes client V1Pod as the API returns it. Each container is (name, image,
    imageID); an imageID of None leaves the container without a status (not started yet)."""
    from kubernetes import client

    def statuses(items):
        state = client.V1ContainerState(
            waiting=client.V1ContainerStateWaiting(reason=waiting) if waiting else None,
            running=None if waiting else client.V1ContainerStateRunning(),
        )
        return [
            client.V1ContainerStatus(
                name=n,
                image=image,
                image_id=image_id,
                ready=not waiting,
                restart_count=0,
                state=state,
            )
            for n, image, image_id in items
            if image_id is not None
        ]

    owners = (
        [
            client.V1OwnerReference(
                api_version="v1", kind=owner[0], name=owner[1], uid="u-1", controller=True
            )
        ]
        if owner
        else None
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            namespace=namespace, name=name, labels=labels, owner_references=owners
        ),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name=n, image=image) for n, image, _ in containers],
            init_containers=[client.V1Container(name=n, image=i) for n, i, _ in init_containers]
            or None,
        ),
        status=client.V1PodStatus(
            phase=phase,
            container_statuses=statuses(containers) or None,
            init_container_statuses=statuses(init_containers) or None,
        ),
    )


class FakeCoreV1Api:
    """A fake of kubernetes' CoreV1Api, for listing pods: no Kubernetes API server can run here.

    It serves `pods` (V1Pod models, see `make_pod`) in pages of the caller's `limit`, with a
    continue token in the list's metadata as the API does, and records every call's arguments in
    `log`. It does not apply field selectors (the caller must filter again). `errors` maps a
    call's number (1-based) to the exception that call raises.
    """

    def __init__(
        self,
        pods: list[Any],
        *,
        errors: dict[int, Exception] | None = None,
        log: list[tuple] | None = None,
    ) -> None:
        self.pods = list(pods)
        self.errors = errors or {}
        self.log = log if log is not None else []

    def list_pod_for_all_namespaces(self, **kw):
        from kubernetes import client

        self.log.append(("list_pods", kw))
        if len(self.log) in self.errors:
            raise self.errors[len(self.log)]
        start = int(kw.get("_continue", "fake-continue-0").removeprefix("fake-continue-"))
        end = start + (kw.get("limit") or len(self.pods))
        token = f"fake-continue-{end}" if end < len(self.pods) else None
        return client.V1PodList(
            items=self.pods[start:end], metadata=client.V1ListMeta(_continue=token)
        )


def fake_cluster_workloads(core_api: Any, **config: Any) -> Any:
    """A ClusterWorkloadsResource whose CoreV1Api is `core_api` (a FakeCoreV1Api): the resource's
    own hook, overridden in a subclass named as a fake, so that Dagster can rebuild it."""
    from gsv_pipelines.resources.workloads import ClusterWorkloadsResource

    class FakeClusterWorkloadsResource(ClusterWorkloadsResource):
        def core_api(self) -> Any:
            return core_api

    return FakeClusterWorkloadsResource(**config)
