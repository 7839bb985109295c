"""100 pushes of 20 distinct images through the whole scanning path: image_push_sensor ticks,
the runs they request, scanning/image_scan per digest, against one scanning/trivy_db refresh.

Measured in the same run, beside the naive count (one scan and one DB download per push, as a
scan-on-push hook without digest keys or a shared DB does): how many Trivy scans ran and how many
times Trivy downloaded its DB. Trivy is the real binary behind a counting wrapper (it logs each
invocation's arguments, then execs trivy); the DB is downloaded from a mirror in the local
registry, as `TRIVY_DB_REPOSITORY` makes Trivy do. The pushes are 20 skopeo copies and 80
re-tags (manifest PUTs of an image already there), interleaved; a sensor tick every 10 pushes,
and every run it requests executed before the next pushes, as the daemon would.
"""

import shutil
import stat
import tempfile
import time
from pathlib import Path

import dagster as dg
import requests

from gsv_pipelines.demo.oci_image import DEMO_PACKAGE_TUPLES, build_alpine_image
from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, write_trivy_db
from gsv_pipelines.lib.core.settings import find_trivy
from gsv_pipelines.lib.scanning.registry_client import MANIFEST_ACCEPT
from tests.services.registry import start_registry
from tests.services.trivy_db import push_db_artifact

IMAGES = 20
TAGS_PER_IMAGE = 5  # 100 pushes
TICK_EVERY = 10
# The runs fail their gates on purpose (a fixable critical CVE, a fake token): keep logs short.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _counting_trivy(work: Path, trivy: str) -> tuple[str, Path]:
    log = work / "trivy-calls.log"
    wrapper = work / "trivy"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {trivy} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper), log


def _pushes(registry, work: Path) -> list[tuple[str, str, int]]:
    """(repository, tag, image index) in push order: each image first pushed, later re-tagged."""
    order = []
    for round_ in range(TAGS_PER_IMAGE):
        for index in range(IMAGES):
            order.append((f"bench/svc{index % 4}", f"v{index}-{round_}", index))
    return order


def _push(registry, work: Path, session: requests.Session, push, manifests: dict) -> None:
    repository, tag, index = push
    if index not in manifests:
        layout = work / f"layout{index}"
        build_alpine_image(
            layout, "0", DEMO_PACKAGE_TUPLES, extra_files={"app/build.txt": f"build {index}\n"}
        )
        registry.push(layout, repository, tag)
        got = session.get(
            f"{registry.url}/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=10,
        )
        got.raise_for_status()
        manifests[index] = (got.content, got.headers["Content-Type"])
        return
    content, content_type = manifests[index]
    session.put(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        data=content,
        headers={"Content-Type": content_type},
        timeout=10,
    ).raise_for_status()


def run() -> dict:
    from gsv_pipelines.defs.scanning.assets import trivy_db
    from gsv_pipelines.defs.scanning.image_scan import (
        image_scan,
        no_embedded_secrets,
        no_fixable_critical,
    )
    from gsv_pipelines.defs.scanning.jobs import image_scan_job
    from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
    from gsv_pipelines.defs.scanning.sensors import build_image_push_sensor
    from gsv_pipelines.resources.policies import PoliciesResource
    from gsv_pipelines.resources.registries import RegistriesResource
    from gsv_pipelines.resources.storage import ArtefactStoreResource
    from gsv_pipelines.resources.trivy import TrivyResource
    from gsv_pipelines.resources.vault import VaultResource

    with tempfile.TemporaryDirectory(prefix="gsv-bench-scans-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        try:
            source = work / "db-source"
            write_trivy_db(source, list(DEMO_ADVISORIES))
            mirror = push_db_artifact(source, registry, "mirror/trivy-db")
            binary, calls = _counting_trivy(work, find_trivy())
            (work / "registries.yaml").write_text(
                f"registries:\n  - name: local\n    url: {registry.url}\n"
                "    repositories: ['bench/*']\n"
            )
            resources = {
                "trivy": TrivyResource(
                    binary=binary, cache_dir=str(work / "cache"), db_repository=mirror
                ),
                "artefact_store": ArtefactStoreResource(url=str(work / "store")),
                "policies": PoliciesResource(),
                "registries": RegistriesResource(path=str(work / "registries.yaml")),
                "vault": VaultResource(addr="http://127.0.0.1:9"),
            }
            defs = dg.Definitions(
                assets=[trivy_db, image_scan],
                asset_checks=[no_fixable_critical, no_embedded_secrets],
                jobs=[image_scan_job],
                resources=resources,
            )
            job = defs.resolve_job_def("image_scan_job")
            sensor = build_image_push_sensor()
            started = time.monotonic()
            with dg.instance_for_test() as instance:
                dg.materialize([trivy_db], instance=instance, resources=resources, run_config=QUIET)
                cursor, run_keys, runs, failed = None, set(), 0, 0
                manifests: dict = {}
                pushes = _pushes(registry, work)
                with requests.Session() as session:
                    for number, push in enumerate(pushes, 1):
                        _push(registry, work, session, push, manifests)
                        if number % TICK_EVERY and number != len(pushes):
                            continue
                        with dg.build_sensor_context(
                            instance=instance, cursor=cursor, resources=resources
                        ) as context:
                            result = sensor(context)
                        if not isinstance(result, dg.SensorResult):
                            continue
                        cursor = result.cursor or cursor
                        for request in result.dynamic_partitions_requests or []:
                            instance.add_dynamic_partitions(
                                IMAGE_DIGESTS.name, list(request.partition_keys)
                            )
                        for request in result.run_requests or []:
                            if request.run_key in run_keys:  # the daemon drops repeated keys
                                continue
                            run_keys.add(request.run_key)
                            outcome = job.execute_in_process(
                                instance=instance,
                                partition_key=request.partition_key,
                                run_config={**request.run_config, **QUIET},
                                raise_on_error=False,
                            )
                            runs += 1
                            # A run fails on its blocking checks: these images carry a fixable
                            # critical CVE and the planted fake token, on purpose.
                            failed += not outcome.success
            seconds = time.monotonic() - started
            lines = calls.read_text().splitlines()
            downloads = sum("--download-db-only" in line for line in lines)
            scans = sum(line.startswith("image ") and "--skip-db-update" in line for line in lines)
        finally:
            registry.stop()
            shutil.rmtree(work / "cache", ignore_errors=True)

    pushes = IMAGES * TAGS_PER_IMAGE
    return {
        "name": "scan_pushes",
        "what": f"{pushes} pushes of {IMAGES} distinct images: sensor ticks every {TICK_EVERY} "
        "pushes, the runs they request, one trivy_db refresh from a mirror",
        "baseline_what": "one scan and one DB download per push (scan-on-push without digest "
        "keys or a shared DB)",
        "goal": f"exactly {IMAGES} scans and 1 DB download",
        "measured": {"scans": scans, "db_downloads": downloads, "runs": runs},
        "baseline": {"scans": pushes, "db_downloads": pushes, "runs": pushes},
        "ratio": {
            "scans": round(scans / pushes, 2),
            "db_downloads": round(downloads / pushes, 2),
            "runs": round(runs / pushes, 2),
        },
        "seconds": round(seconds, 1),
        "runs_failing_their_gates": failed,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
