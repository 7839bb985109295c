"""Fakes of the Kubernetes API for the rotation consumers hook: no API server can run here."""

from collections import Counter
from typing import Any

from gsv_pipelines.lib.consumers import ESO_GROUP, ESO_VERSION


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
