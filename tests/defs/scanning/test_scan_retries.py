"""image_push_sensor against the real registry and real Trivy: a scan that failed before it
recorded anything is retried after its backoff, visibly, until it records; artifacts that are not
images (pushed through the registry's API as ORAS, cosign and Trivy's publisher push them) are
skipped and counted, never scanned."""

import shutil
import uuid

import dagster as dg

from gsv_pipelines.defs.scanning.assets import trivy_db
from gsv_pipelines.defs.scanning.image_scan import (
    image_scan,
    no_embedded_secrets,
    no_fixable_critical,
)
from gsv_pipelines.defs.scanning.jobs import image_scan_job
from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
from gsv_pipelines.defs.scanning.sensors import build_image_push_sensor
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning import store as scan_store
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource
from gsv_pipelines.resources.trivy import TrivyResource
from gsv_pipelines.resources.vault import VaultResource
from tests.defs.scanning.test_push_sensor import entry, push_variant, registries_file, tick

IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"


def _scan(job, instance, request) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )


def test_a_first_scan_that_failed_is_retried_after_its_backoff_until_it_records(
    registry, trivy_bin, trivy_cache, tmp_path
):
    prefix = f"retry-{uuid.uuid4().hex[:8]}"
    digest = push_variant(registry.host, tmp_path, f"{prefix}/api", "1.0", "r1")
    cache = tmp_path / "cache"  # no vulnerability DB yet: scanning/trivy_db never ran
    cache.mkdir()
    resources = {
        "trivy": TrivyResource(binary=trivy_bin, cache_dir=str(cache)),
        "artefact_store": ArtefactStoreResource(url=str(tmp_path / "store")),
        "policies": PoliciesResource(),
        "registries": registries_file(tmp_path, entry("local", registry.url, f"{prefix}/*")),
        "vault": VaultResource(addr="http://127.0.0.1:9"),
    }
    defs = dg.Definitions(
        assets=[trivy_db, image_scan],
        asset_checks=[no_fixable_critical, no_embedded_secrets],
        jobs=[image_scan_job],
        resources=resources,
    )
    job = defs.resolve_job_def("image_scan_job")
    patient = build_image_push_sensor(retry_base_seconds=3600)
    eager = build_image_push_sensor(retry_base_seconds=0)

    with dg.instance_for_test() as instance:
        first = tick(patient, instance, resources, None)
        [request] = first.run_requests
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])
        failed = _scan(job, instance, request)
        assert not failed.success
        [failure] = failed.get_step_failure_events()
        assert "no vulnerability DB" in failure.step_failure_data.error.message

        # Nothing new in the registry, but the digest is not forgotten: it waits, and says so.
        waiting = tick(patient, instance, resources, first.cursor)
        assert not waiting.run_requests
        assert (
            f"1 failed scan(s) waiting for their backoff: {digest[:19]} (attempt 2 in 60 min)"
            in waiting.skip_reason.skip_message
        )

        # Once the backoff is over, the same scan again, as attempt 2.
        again = tick(eager, instance, resources, first.cursor)
        [retry] = again.run_requests
        assert (retry.run_key, retry.partition_key) == (f"{digest}|attempt-2", digest)
        assert retry.run_config == request.run_config
        assert retry.tags["gsv/scan-attempt"] == "2"
        assert retry.tags["gsv/image"] == f"{prefix}/api:1.0"

        # The cause is gone (the DB is there now): the retry scans and records.
        shutil.copytree(trivy_cache / "db", cache / "db")
        assert _scan(job, instance, retry).success
        assert scan_store.latest_scan(ArtefactStore(str(tmp_path / "store")), digest) is not None
        done = tick(eager, instance, resources, first.cursor)
        assert not done.run_requests


def test_artifacts_that_are_not_images_are_skipped_and_counted(registry, tmp_path):
    prefix = f"artifacts-{uuid.uuid4().hex[:8]}"
    app = f"{prefix}/app"
    registry.push_artifact(
        f"{prefix}/trivy-db",
        "2",
        "application/vnd.aquasec.trivy.config.v1+json",
        [("application/vnd.aquasec.trivy.db.layer.v1.tar+gzip", b"not a real db")],
    )
    signed = "sha256-" + "a" * 64
    registry.push_artifact(
        app,
        f"{signed}.sig",
        IMAGE_CONFIG,
        [("application/vnd.dev.cosign.simplesigning.v1+json", b'{"critical": {}}')],
    )
    registry.push_artifact(
        app, f"{signed}.att", IMAGE_CONFIG, [("application/vnd.dsse.envelope.v1+json", b"{}")]
    )
    registry.push_artifact(
        app,
        "sbom",
        "application/vnd.oci.empty.v1+json",
        [("application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')],
        artifact_type="application/spdx+json",
    )
    resources = {
        "registries": registries_file(tmp_path, entry("local", registry.url, f"{prefix}/*")),
        "vault": VaultResource(addr="http://127.0.0.1:9"),  # anonymous: never contacted
    }
    sensor = build_image_push_sensor()

    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, resources, None)
        assert not first.run_requests
        reason = first.skip_reason.skip_message
        assert "0 new digests, 4 non-image artifacts skipped" in reason
        assert (
            "4 non-image artifact(s) skipped, not scanned: 1 SBOM, 1 Trivy DB, 1 attestation, "
            "1 cosign signature"
        ) in reason

        # An image beside them is scanned; the artifacts, known now, are neither read nor counted.
        image = push_variant(registry.host, tmp_path, app, "1.0", "art1")
        second = tick(sensor, instance, resources, first.cursor)
        assert [r.partition_key for r in second.run_requests] == [image]
        [added] = second.dynamic_partitions_requests
        assert list(added.partition_keys) == [image]


def test_a_scan_launched_by_hand_for_an_artifact_is_refused(
    registry, trivy_bin, trivy_cache, tmp_path
):
    repository = f"by-hand-{uuid.uuid4().hex[:8]}/db"
    digest = registry.push_artifact(
        repository,
        "2",
        "application/vnd.aquasec.trivy.config.v1+json",
        [("application/vnd.aquasec.trivy.db.layer.v1.tar+gzip", b"not a real db")],
    )
    store = tmp_path / "store"
    resources = {
        "trivy": TrivyResource(binary=trivy_bin, cache_dir=str(trivy_cache)),
        "artefact_store": ArtefactStoreResource(url=str(store)),
        "policies": PoliciesResource(),
        "registries": registries_file(tmp_path, entry("local", registry.url, repository)),
        "vault": VaultResource(addr="http://127.0.0.1:9"),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(IMAGE_DIGESTS.name, [digest])
        result = dg.materialize(
            [image_scan],
            partition_key=digest,
            instance=instance,
            resources=resources,
            run_config={
                "ops": {
                    "scanning__image_scan": {
                        "config": {"reference": f"{registry.host}/{repository}@{digest}"}
                    }
                }
            },
            raise_on_error=False,
        )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "is not an image but a Trivy DB" in failure.step_failure_data.error.message
    assert scan_store.latest_scan(ArtefactStore(str(store)), digest) is None
