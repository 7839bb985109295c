import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from gsv_pipelines.lib.rotation.consumers import (
    ESO_GROUP,
    ESO_PLURAL,
    ESO_VERSION,
    MERGE_PATCH,
    ConsumerError,
    notify_consumers,
)
from gsv_pipelines.lib.rotation.policy import Consumers
from gsv_pipelines.lib.rotation.rotate import Journal
from tests.services.kube_fake import (
    SYNC_FAILED,
    SYNCED_AFTER,
    SYNCED_BEFORE,
    FakeAppsV1Api,
    FakeCustomObjectsApi,
)

# 05:06:07.89 at UTC+2: 1741057567 seconds after the epoch.
NOW = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=timezone(timedelta(hours=2)))
FORCE_SYNC_BODY = {"metadata": {"annotations": {"force-sync": "1741057567"}}}
RESTART_BODY = {
    "spec": {
        "template": {
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-03-04T03:06:07Z"}
            }
        }
    }
}
ESO_API = {"group": ESO_GROUP, "version": ESO_VERSION, "plural": ESO_PLURAL}


def _apis(**custom: Any) -> tuple[FakeCustomObjectsApi, FakeAppsV1Api, list[tuple]]:
    log: list[tuple] = []
    fail_deployment = custom.pop("fail_deployment", None)
    return (
        FakeCustomObjectsApi(log=log, **custom),
        FakeAppsV1Api(fail=fail_deployment, log=log),
        log,
    )


CONSUMERS = Consumers(
    external_secrets=(("platform", "agent-registry-db"), ("qdrant", "qdrant-api-key")),
    deployments=(("platform", "agent-registry"), ("platform", "billing")),
)


def test_external_secrets_are_resynced_then_deployments_restarted_in_order():
    custom_api, apps_api, log = _apis()
    journal = Journal()
    done = notify_consumers(
        CONSUMERS, custom_api=custom_api, apps_api=apps_api, now=NOW, record=journal.record
    )
    merge = {"_content_type": MERGE_PATCH}
    es = (ESO_GROUP, ESO_VERSION)
    assert log == [
        ("patch_es", *es, "platform", ESO_PLURAL, "agent-registry-db", FORCE_SYNC_BODY, merge),
        ("patch_es", *es, "qdrant", ESO_PLURAL, "qdrant-api-key", FORCE_SYNC_BODY, merge),
        ("read_es", *es, "platform", ESO_PLURAL, "agent-registry-db"),
        ("read_es", *es, "qdrant", ESO_PLURAL, "qdrant-api-key"),
        ("patch_deployment", "platform", "agent-registry", RESTART_BODY, merge),
        ("patch_deployment", "platform", "billing", RESTART_BODY, merge),
    ]
    assert (ESO_GROUP, ESO_VERSION, ESO_PLURAL) == ("external-secrets.io", "v1", "externalsecrets")
    assert done == [
        "ExternalSecret platform/agent-registry-db resynced",
        "ExternalSecret qdrant/qdrant-api-key resynced",
        "Deployment platform/agent-registry restarted",
        "Deployment platform/billing restarted",
    ]
    assert [(s.name, s.facts) for s in journal.steps] == [
        (
            "consumer_resynced",
            {"kind": "ExternalSecret", "namespace": "platform", "object_name": "agent-registry-db"},
        ),
        (
            "consumer_resynced",
            {"kind": "ExternalSecret", "namespace": "qdrant", "object_name": "qdrant-api-key"},
        ),
        (
            "consumer_resynced",
            {"kind": "Deployment", "namespace": "platform", "object_name": "agent-registry"},
        ),
        (
            "consumer_resynced",
            {"kind": "Deployment", "namespace": "platform", "object_name": "billing"},
        ),
    ]


def test_the_stamps_are_unix_seconds_and_rfc3339_utc_whatever_the_zone():
    custom_api, apps_api, log = _apis()
    one = Consumers(external_secrets=(("ns", "es"),), deployments=(("ns", "web"),))
    notify_consumers(
        one, custom_api=custom_api, apps_api=apps_api, now=NOW, record=Journal().record
    )
    force_sync = log[0][6]["metadata"]["annotations"]["force-sync"]
    restarted_at = log[-1][3]["spec"]["template"]["metadata"]["annotations"]
    assert force_sync == str(int(NOW.timestamp())) == "1741057567"
    stamp = restarted_at["kubectl.kubernetes.io/restartedAt"]
    assert stamp == "2025-03-04T03:06:07Z"
    assert datetime.fromisoformat(stamp) == NOW.replace(microsecond=0)
    # Same instant given in UTC: same stamps.
    custom_api, apps_api, utc_log = _apis()
    notify_consumers(
        one,
        custom_api=custom_api,
        apps_api=apps_api,
        now=NOW.astimezone(UTC),
        record=Journal().record,
    )
    assert utc_log[0][6] == log[0][6] and utc_log[-1][3] == log[-1][3]


def test_deployments_restart_only_once_eso_reports_the_resync():
    custom_api, apps_api, log = _apis(sync_after=3)
    sleeps: list[float] = []
    notify_consumers(
        CONSUMERS,
        custom_api=custom_api,
        apps_api=apps_api,
        now=NOW,
        record=Journal().record,
        poll_seconds=2.0,
        sleep=sleeps.append,
    )
    assert sleeps == [2.0, 2.0]
    kinds = [entry[0] for entry in log]
    assert kinds == ["patch_es"] * 2 + ["read_es"] * 6 + ["patch_deployment"] * 2
    assert custom_api.reads == {
        ("platform", "agent-registry-db"): 3,
        ("qdrant", "qdrant-api-key"): 3,
    }


def test_every_consumer_is_tried_and_the_failures_are_named_together():
    custom_api, apps_api, log = _apis(
        fail_patch={("platform", "agent-registry-db"): ApiException(403, "Forbidden")},
        fail_deployment={("platform", "agent-registry"): ApiException(404, "Not Found")},
    )
    journal = Journal()
    with pytest.raises(ConsumerError) as raised:
        notify_consumers(
            CONSUMERS, custom_api=custom_api, apps_api=apps_api, now=NOW, record=journal.record
        )
    message = str(raised.value)
    assert message.startswith("2 of 4 consumer(s) not updated: ")
    assert "ExternalSecret platform/agent-registry-db: forbidden (403)" in message
    assert "Deployment platform/agent-registry: 404 Not Found" in message
    assert (
        "(done: ExternalSecret qdrant/qdrant-api-key resynced; Deployment platform/billing "
        "restarted)" in message
    )
    # The others were still patched, and only they were recorded.
    assert [entry[0] for entry in log].count("patch_deployment") == 2
    assert [(s.facts["kind"], s.facts["object_name"]) for s in journal.steps] == [
        ("ExternalSecret", "qdrant-api-key"),
        ("Deployment", "billing"),
    ]


def test_an_external_secret_eso_does_not_resync_times_out_with_its_ready_reason():
    custom_api, apps_api, _ = _apis(
        stuck={("qdrant", "qdrant-api-key"): SYNC_FAILED, ("platform", "agent-registry-db"): {}}
    )
    sleeps: list[float] = []
    journal = Journal()
    with pytest.raises(ConsumerError) as raised:
        notify_consumers(
            CONSUMERS,
            custom_api=custom_api,
            apps_api=apps_api,
            now=NOW,
            record=journal.record,
            sync_timeout_seconds=10,
            poll_seconds=4,
            sleep=sleeps.append,
        )
    assert sleeps == [4, 4, 4]  # ceil(10 / 4) waits, then one last look
    assert custom_api.reads[("qdrant", "qdrant-api-key")] == 4
    message = str(raised.value)
    assert message.startswith("2 of 4 consumer(s) not updated: ")
    assert (
        "ExternalSecret platform/agent-registry-db: not resynced within the timeout "
        "(Ready=unknown, reason none;" in message
    )
    assert (
        "ExternalSecret qdrant/qdrant-api-key: not resynced within the timeout "
        "(Ready=False, reason SecretSyncedError; spec.refreshPolicy CreatedOnce never resyncs)"
    ) in message
    # The Deployments were restarted all the same: they may read other, synced secrets.
    assert [s.facts["kind"] for s in journal.steps] == ["Deployment", "Deployment"]


def test_errors_name_the_cause_but_never_carry_a_response_body():
    leaky = ApiException(500, "Internal Server Error")
    leaky.body = '{"message": "password=s3cr3t-value"}'
    custom_api, apps_api, _ = _apis(
        fail_patch={("platform", "agent-registry-db"): ApiException(404, "Not Found")},
        fail_read={("qdrant", "qdrant-api-key"): leaky},
        fail_deployment={
            ("platform", "agent-registry"): urllib3.exceptions.MaxRetryError(None, "/x"),
            ("platform", "billing"): ApiException(403, "Forbidden"),
        },
    )
    with pytest.raises(ConsumerError) as raised:
        notify_consumers(
            CONSUMERS,
            custom_api=custom_api,
            apps_api=apps_api,
            now=NOW,
            record=Journal().record,
            sleep=lambda _: None,
        )
    message = str(raised.value)
    assert "s3cr3t" not in message and "password" not in message
    assert message.startswith("4 of 4 consumer(s) not updated: ") and "done:" not in message
    assert (
        "ExternalSecret platform/agent-registry-db: not found (404), or external-secrets.io/v1 "
        "not served (ESO older than 0.16)" in message
    )
    assert (
        "ExternalSecret qdrant/qdrant-api-key: status unreadable: 500 Internal Server Error"
        in message
    )
    assert "Deployment platform/agent-registry: the Kubernetes API is unreachable" in message
    assert "Deployment platform/billing: forbidden (403)" in message


def test_no_consumers_means_no_calls_and_a_naive_time_is_refused():
    custom_api, apps_api, log = _apis()
    done = notify_consumers(
        Consumers(), custom_api=custom_api, apps_api=apps_api, now=NOW, record=Journal().record
    )
    assert done == [] and log == []
    with pytest.raises(ValueError, match="timezone-aware"):
        notify_consumers(
            CONSUMERS,
            custom_api=custom_api,
            apps_api=apps_api,
            now=datetime(2025, 3, 4, 5, 6, 7),
            record=Journal().record,
        )
    assert log == []


class RecordingApiServer(BaseHTTPRequestHandler):
    """A fake Kubernetes API server on loopback (no real one can run here): it records each
    request the real `kubernetes` client sends and answers like the API server would."""

    requests: list[tuple[str, str, str | None, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PATCH(self) -> None:
        sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("PATCH", self.path, self.headers["Content-Type"], sent))
        if "/deployments/" in self.path:
            self._answer({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}})
        else:
            self._answer({"metadata": {}, "status": SYNCED_BEFORE})

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None, None))
        self._answer({"metadata": {}, "status": SYNCED_AFTER})


@pytest.fixture
def api_server() -> Iterator[tuple[str, list]]:
    seen: list = []
    handler = type("Handler", (RecordingApiServer,), {"requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_real_client_sends_merge_patches_to_the_right_urls(api_server):
    host, seen = api_server
    configuration = client.Configuration()
    configuration.host = host
    api = client.ApiClient(configuration)
    one = Consumers(external_secrets=(("platform", "hmac"),), deployments=(("platform", "web"),))
    done = notify_consumers(
        one,
        custom_api=client.CustomObjectsApi(api),
        apps_api=client.AppsV1Api(api),
        now=NOW,
        record=Journal().record,
    )
    assert done == ["ExternalSecret platform/hmac resynced", "Deployment platform/web restarted"]
    assert seen == [
        (
            "PATCH",
            "/apis/external-secrets.io/v1/namespaces/platform/externalsecrets/hmac",
            MERGE_PATCH,
            FORCE_SYNC_BODY,
        ),
        (
            "GET",
            "/apis/external-secrets.io/v1/namespaces/platform/externalsecrets/hmac",
            None,
            None,
        ),
        ("PATCH", "/apis/apps/v1/namespaces/platform/deployments/web", MERGE_PATCH, RESTART_BODY),
    ]
