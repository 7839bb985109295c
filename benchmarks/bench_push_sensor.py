"""One image_push_sensor tick over 1,000 tags: the push watch (catalog, tag lists, manifest HEADs
at most 16 at a time) against the naive baseline measured in the same run: the same catalog and
tag lists, then one HEAD per tag, sequentially, with a plain requests session. Then the same
tick through the sensor itself (Dagster's context, cursor and run requests included).

The registry is Debian's docker-registry on loopback, started and stopped here; the tags are a
few distinct images, each pushed once with skopeo and its manifest PUT under many more tags.
On loopback a request costs CPU, not waiting, and two shared cores bound any concurrency; so both
are measured again through FlakyProxy adding 20 ms to every request, as a registry across a
network would (`rtt20ms_seconds`).
"""

import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import requests

from gsv_pipelines.demo.oci_image import build_alpine_image
from gsv_pipelines.lib.scanning.push_watch import watch
from gsv_pipelines.lib.scanning.registries import RegistryConfig
from gsv_pipelines.lib.scanning.registry_client import MANIFEST_ACCEPT, WORKERS, RegistryClient
from tests.services.flaky_proxy import FlakyProxy
from tests.services.registry import start_registry

REPOSITORIES = 5
TAGS_PER_REPOSITORY = 200  # 1,000 tags in all
ROUNDS = 3  # the median of three ticks each: the machine is shared
LATENCY_SECONDS = 0.020


def _seed(registry, work: Path) -> dict[str, str]:
    """The repositories with their tags; {repository: digest} (one image per repository)."""
    digests = {}
    with requests.Session() as session:
        for index in range(REPOSITORIES):
            repository = f"bench/app{index}"
            layout = work / f"layout{index}"
            build_alpine_image(layout, "0", [("bench", f"{index}.0-r0", "bench")])
            registry.push(layout, repository, "t000")
            manifest = session.get(
                f"{registry.url}/v2/{repository}/manifests/t000",
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=10,
            )
            manifest.raise_for_status()
            digests[repository] = manifest.headers["Docker-Content-Digest"]
            for tag in range(1, TAGS_PER_REPOSITORY):
                session.put(
                    f"{registry.url}/v2/{repository}/manifests/t{tag:03d}",
                    data=manifest.content,
                    headers={"Content-Type": manifest.headers["Content-Type"]},
                    timeout=10,
                ).raise_for_status()
    return digests


def _watch(url: str):
    config = RegistryConfig(name="bench", url=url, repositories=("bench/*",))
    return watch([config], {}, RegistryClient)


def _naive(url: str) -> dict[str, dict[str, str]]:
    """The baseline: catalog, tag lists, then one HEAD per tag, one after the other."""
    found: dict[str, dict[str, str]] = {}
    with requests.Session() as session:
        catalog = session.get(f"{url}/v2/_catalog?n=100", timeout=10).json()["repositories"]
        for repository in (r for r in catalog if r.startswith("bench/")):
            tags = session.get(f"{url}/v2/{repository}/tags/list", timeout=10).json()["tags"]
            found[repository] = {}
            for tag in tags:
                response = session.head(
                    f"{url}/v2/{repository}/manifests/{tag}",
                    headers={"Accept": MANIFEST_ACCEPT},
                    timeout=10,
                )
                response.raise_for_status()
                found[repository][tag] = response.headers["Docker-Content-Digest"]
    return found


def _timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def run() -> dict:
    from gsv_pipelines.defs.scanning.sensors import build_image_push_sensor
    from gsv_pipelines.resources.registries import RegistriesResource
    from gsv_pipelines.resources.vault import VaultResource

    with tempfile.TemporaryDirectory(prefix="gsv-bench-push-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        try:
            digests = _seed(registry, work)
            expected = {
                repository: {f"t{tag:03d}": digest for tag in range(TAGS_PER_REPOSITORY)}
                for repository, digest in digests.items()
            }

            def check(result, baseline) -> None:
                """Both saw every tag, each at its image's digest."""
                assert result.cursor == {"bench": expected} and not result.errors, result.errors
                assert baseline == expected
                assert sorted(i.digest for i in result.new_images) == sorted(digests.values())

            watched, naive = [], []
            for _ in range(ROUNDS):
                seconds, result = _timed(lambda: _watch(registry.url))
                watched.append(seconds)
                seconds, baseline = _timed(lambda: _naive(registry.url))
                naive.append(seconds)
                check(result, baseline)

            proxy = FlakyProxy(registry.url).start()
            try:
                proxy.delay(LATENCY_SECONDS)
                far_watch, result = _timed(lambda: _watch(proxy.url))
                far_naive, baseline = _timed(lambda: _naive(proxy.url))
                check(result, baseline)
            finally:
                proxy.stop()

            (work / "registries.yaml").write_text(
                f"registries:\n  - name: bench\n    url: {registry.url}\n"
                '    repositories: ["bench/*"]\n'
            )
            resources = {
                "registries": RegistriesResource(path=str(work / "registries.yaml")),
                "vault": VaultResource(addr="http://127.0.0.1:1"),  # never contacted
            }
            sensor = build_image_push_sensor()
            with (
                dg.instance_for_test() as instance,
                dg.build_sensor_context(instance=instance, resources=resources) as context,
            ):
                tick_seconds, tick = _timed(lambda: sensor(context))
            assert len(tick.run_requests) == REPOSITORIES
        finally:
            registry.stop()

    tags = REPOSITORIES * TAGS_PER_REPOSITORY
    measured, floor = statistics.median(watched), statistics.median(naive)
    return {
        "name": "push_sensor",
        "what": f"one push-watch tick over {tags} tags in {REPOSITORIES} repositories "
        f"(catalog, tag lists, manifest HEADs, {WORKERS} in flight), median of {ROUNDS}",
        "baseline_what": "the same listing, then one HEAD per tag, sequentially (plain requests)",
        "goal": "a 1,000-tag tick far under the 60 s sensor limit (budget 25 s), also 20 ms away",
        "measured": {"seconds": round(measured, 3), "rtt20ms_seconds": round(far_watch, 3)},
        "baseline": {"seconds": round(floor, 3), "rtt20ms_seconds": round(far_naive, 3)},
        "ratio": {
            "seconds": round(measured / floor, 2),
            "rtt20ms_seconds": round(far_watch / far_naive, 2),
        },
        "sensor_tick_seconds": round(tick_seconds, 3),
        "rounds": {"watch": [round(s, 3) for s in watched], "naive": [round(s, 3) for s in naive]},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
