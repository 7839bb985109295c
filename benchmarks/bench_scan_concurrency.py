"""A release: 40 distinct images pushed at once to the local registry, found by one
image_push_sensor tick, each scanned by its image_scan_job run (the scan and its two gates), as
before issue 17 (today's path) and as shipped, in one run; on 1 core and on 2 (taskset).

Every contender runs the same 40 runs on the same images, 4 runs at a time (the local
instance's max_concurrent_runs): worker processes that execute the sensor's run requests as the
process of a launched run does (`dagster.execute_job` on the job's code pointer: its own
executor runs the steps), against one on-disk Dagster instance, with the trivy_scan pool at its
default limit, and record and judge every scan:
- today's path: Dagster's default executor, a process a step, each loading the code location
  again; no Trivy server: every scan runs Trivy on its own, one at a time on the cache's lock
  (Trivy opens its DB and layer cache with an exclusive lock);
- the lock: the steps in the run's process, as shipped, Trivy still on its own (what the
  executor gives alone, and what the server adds on top);
- as shipped: the steps in the run's process, the Trivy server (`trivy_server.py`) on the same
  DB, scans as its clients, as many at once as the pool lets.
Measured: scans per minute from the run requests to the 40th recorded scan, the CPU time a
scan took by part (the Trivy processes, clients and server; the runs' own, Dagster's and the
asset's and gates' code in the workers and their step processes; the registry), and how busy the
cores were meanwhile (/proc/stat): where a contender keeps them busy all the time, no other way
of running the same work finishes sooner. Each image is a one-layer Alpine image with packages
the generated DB knows (four different verdicts, accepted by the benchmark's scan policy so that
the gates pass) and a small application (200 text files of 2 KB, distinct per image, so no layer
is cached for another); every run's findings are checked. The same scans without Dagster
("scans alone"); then, on 2 cores, the lock and the server with 20 ms added to every registry
request (a registry across a network), where a scan waits on the network under the lock.
The workers are long-lived: a launched run's own process start, which loads the code location
once a run, is left out of every contender.
"""

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from benchmarks.proc import (
    IDLE,
    IOWAIT,
    children_cpu_seconds,
    cpu_ticks,
    process_cpu_seconds,
    tree_cpu_seconds,
)

IMAGES = 40
APP_FILES, FILE_BYTES = 200, 2048
ROUNDS = 2  # each contender twice, alternating: the machine may be shared
# The registry across a network: the same 20 ms a request as the push-sensor benchmark, added by
# a proxy in front of the local registry (tests/services/flaky_proxy.py), on 2 cores.
LATENCY_MS = 20
PUSHERS = 8
CORE_SETS = ("0", "0,1")
ROOT = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
SPEC = "GSV_BENCH_SCAN_SPEC"  # what scan_job builds the job on, as JSON
VULNERABLE = [("libcrypto3", "3.1.4-r0", "openssl"), ("busybox", "1.36.1-r15", "busybox")]
FIXED = [("libcrypto3", "3.1.4-r5", "openssl"), ("busybox", "1.36.1-r16", "busybox")]
# (packages, the CVEs of the generated DB they carry)
VARIANTS = [
    (VULNERABLE, {"CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0003"}),
    ([FIXED[0], VULNERABLE[1]], {"CVE-2099-0003"}),
    ([VULNERABLE[0], FIXED[1]], {"CVE-2099-0001", "CVE-2099-0002"}),
    (FIXED, set()),
]
# The release's findings accepted, so that the gates judge every scan and pass.
POLICY = "fail_on: CRITICAL\nignores:\n" + "".join(
    f"  - {{id: CVE-2099-000{n}, reason: benchmark release, expires: 2099-12-31}}\n"
    for n in (1, 2, 3)
)


def _run_workers() -> int:
    """How many runs the local instance runs at once (dagster.yaml)."""
    instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    return instance["concurrency"]["runs"]["max_concurrent_runs"]


def _images(work: Path, registry) -> dict[str, tuple[str, set[str]]]:
    """Build and push the release (all pushes at once); {digest: (reference, the CVEs it must
    show)}."""
    from gsv_pipelines.demo.oci_image import build_alpine_image

    built = []
    for index in range(IMAGES):
        packages, cves = VARIANTS[index % len(VARIANTS)]
        rnd = random.Random(index)
        letters = string.ascii_letters + string.digits + " =()\n"
        app = {
            f"app/src/module{n:03d}.py": "".join(rnd.choices(letters, k=FILE_BYTES))
            for n in range(APP_FILES)
        }
        layout = work / "layouts" / str(index)
        digest = build_alpine_image(layout, "1.0", packages, extra_files=app)
        built.append((layout, f"release/svc{index:02d}", digest, cves))
    with ThreadPoolExecutor(PUSHERS) as pool:
        list(pool.map(lambda b: registry.push(b[0], b[1], "1.0"), built))
    return {
        digest: (f"{registry.host}/{repository}@{digest}", cves)
        for _, repository, digest, cves in built
    }


def _worker(home: str, spec: dict, requests, results, ready) -> None:
    """One run worker: executes the run requests it is handed on the instance, as the process of
    a launched run does: the job loaded from its code pointer, its steps run by its executor."""
    import dagster as dg

    from benchmarks.bench_scan_concurrency import scan_job

    os.environ[SPEC] = json.dumps(spec)  # for scan_job, here and in any step process
    job = dg.reconstructable(scan_job)
    instance = dg.DagsterInstance.from_config(home)
    ready.put(os.getpid())
    while (request := requests.get()) is not None:
        digest, run_config = request
        started = time.monotonic()
        outcome = dg.execute_job(
            job,
            instance=instance,
            tags={"dagster/partition": digest},
            run_config={**run_config, **QUIET},
        )
        results.put((digest, started, time.monotonic(), outcome.success))


def scan_job():
    """image_scan_job with the gates, on this run's registry, store and Trivy (SPEC); with
    `per_step_processes`, as it was before issue 17: Dagster's default executor, a process a step,
    each loading the code location again."""
    import dagster as dg

    from gsv_pipelines.defs.scanning.image_scan import (
        image_scan,
        no_embedded_secrets,
        no_fixable_critical,
    )
    from gsv_pipelines.defs.scanning.jobs import image_scan_job
    from gsv_pipelines.resources.policies import PoliciesResource
    from gsv_pipelines.resources.registries import RegistriesResource
    from gsv_pipelines.resources.storage import ArtefactStoreResource
    from gsv_pipelines.resources.trivy import TrivyResource
    from gsv_pipelines.resources.vault import VaultResource

    spec = json.loads(os.environ[SPEC])
    if spec["per_step_processes"]:
        image_scan_job = dg.define_asset_job(
            "image_scan_job", selection=dg.AssetSelection.assets(image_scan)
        )
    return dg.Definitions(
        assets=[image_scan],
        asset_checks=[no_fixable_critical, no_embedded_secrets],
        jobs=[image_scan_job],
        resources={
            "trivy": TrivyResource(**spec["trivy"]),
            "artefact_store": ArtefactStoreResource(url=spec["store"]),
            # The gates judge every scan and pass: the release's CVEs are accepted.
            "policies": PoliciesResource(scan_policy_path=spec["policy"]),
            "registries": RegistriesResource(path=spec["registries"]),
            "vault": VaultResource(addr="http://127.0.0.1:9"),
        },
    ).resolve_job_def("image_scan_job")


def _cores_time() -> list[int]:
    """Busy and total ticks of the cores this process may use."""
    ticks = cpu_ticks(os.sched_getaffinity(0))
    return [sum(ticks) - ticks[IDLE] - ticks[IOWAIT], sum(ticks)]


def _busy_share(before: list[int]) -> float:
    """How busy those cores were since `before`: 1.0 is every core busy all the time, where no
    other way of running the same work could finish sooner."""
    busy, total = (b - a for a, b in zip(before, _cores_time(), strict=True))
    return round(busy / max(total, 1), 3)


def _cpu_wrapper(work: Path, binary: str) -> tuple[str, Path]:
    """trivy behind a bash wrapper whose `times` writes each call's CPU time into a folder."""
    folder = work / "trivy-cpu"
    folder.mkdir()
    wrapper = work / "trivy"
    wrapper.write_text(f'#!/bin/bash\n"{binary}" "$@"\nrc=$?\ntimes > "{folder}/$$"\nexit $rc\n')
    wrapper.chmod(0o755)
    return str(wrapper), folder


def _cpu_seconds(folder: Path) -> float:
    """The calls' user and system times: the second line of `times` ("0m1.250s 0m0.310s")
    is the children's, trivy's."""

    def seconds(field: str) -> float:
        minutes, _, rest = field.partition("m")
        return int(minutes) * 60 + float(rest.rstrip("s"))

    return sum(
        seconds(field)
        for path in folder.iterdir()
        for field in path.read_text().splitlines()[1].split()
    )


def _contender(
    name: str,
    work: Path,
    registry,
    url: str,
    db_cache: Path,
    expected,
    server: bool,
    per_step_processes: bool,
) -> dict:
    """The 40 runs on an instance of their own; `url`: the registry as watched, itself or a proxy
    in front of it."""
    import dagster as dg

    from gsv_pipelines.defs.scanning.image_scan import SCAN_POOL
    from gsv_pipelines.defs.scanning.partitions import IMAGE_DIGESTS
    from gsv_pipelines.defs.scanning.sensors import build_image_push_sensor
    from gsv_pipelines.lib.core.settings import DEFAULT_SCAN_CONCURRENCY, find_trivy
    from gsv_pipelines.lib.core.store import ArtefactStore
    from gsv_pipelines.lib.scanning import store as scan_store
    from gsv_pipelines.lib.scanning.trivy_server import start_local
    from gsv_pipelines.resources.registries import RegistriesResource
    from gsv_pipelines.resources.vault import VaultResource

    here = work / name
    home = here / "dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n"
    )
    policy = here / "policy.yaml"
    policy.write_text(POLICY)
    cache = here / "cache"
    shutil.copytree(db_cache, cache)
    binary, cpu_log = _cpu_wrapper(here, find_trivy())
    registries = here / "registries.yaml"
    registries.write_text(
        f"registries:\n  - name: local\n    url: {url}\n    repositories: ['release/*']\n"
    )
    trivy_server = start_local(find_trivy(), cache, here / "logs") if server else None
    trivy = {"binary": binary, "cache_dir": str(cache), "timeout_seconds": 600}
    if trivy_server:
        trivy |= {"server_url": trivy_server.url, "server_token": trivy_server.token}
    spec = {
        "trivy": trivy,
        "store": str(here / "store"),
        "registries": str(registries),
        "policy": str(policy),
        "per_step_processes": per_step_processes,
    }
    context = multiprocessing.get_context("spawn")
    requests, results, ready = context.Queue(), context.Queue(), context.Queue()
    workers = [
        context.Process(target=_worker, args=(str(home), spec, requests, results, ready))
        for _ in range(_run_workers())
    ]
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.event_log_storage.set_concurrency_slots(SCAN_POOL, DEFAULT_SCAN_CONCURRENCY)
            for worker in workers:
                worker.start()
            for _ in workers:
                ready.get()
            cpu = _cpu_by_part(workers, registry)
            # The release is in the registry: one tick finds every image.
            resources = {
                "registries": RegistriesResource(path=str(registries)),
                "vault": VaultResource(addr="http://127.0.0.1:9"),
            }
            with dg.build_sensor_context(instance=instance, resources=resources) as sensor_ctx:
                tick = build_image_push_sensor()(sensor_ctx)
            for request in tick.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(IMAGE_DIGESTS.name, list(request.partition_keys))
            run_requests = tick.run_requests
            assert len(run_requests) == IMAGES, f"the tick requested {len(run_requests)} runs"
            started, cores = time.monotonic(), _cores_time()
            for request in run_requests:
                requests.put((request.partition_key, request.run_config))
            done = [results.get() for _ in run_requests]
            seconds = time.monotonic() - started
            busy = _busy_share(cores)
            server_cpu = children_cpu_seconds(trivy_server.process.pid) if trivy_server else 0.0
            cpu = {part: used - cpu[part] for part, used in _cpu_by_part(workers, registry).items()}
    finally:
        for _ in workers:
            requests.put(None)
        for worker in workers:
            worker.join()
        if trivy_server:
            trivy_server.stop()

    clients_cpu = _cpu_seconds(cpu_log)
    failed = [digest for digest, _, _, success in done if not success]
    assert not failed, f"{name}: {len(failed)} runs failed, e.g. {failed[0]}"
    store = ArtefactStore(str(here / "store"))
    for digest, (_, cves) in expected.items():
        record = scan_store.latest_scan(store, digest)
        found = set(scan_store.read_frame(store, record, "vulnerabilities")["vulnerability_id"])
        assert found == cves, f"{name}: {digest} found {sorted(found)}, not {sorted(cves)}"
    spans = sorted((start, end) for _, start, end, _ in done)
    return {
        "seconds": round(seconds, 2),
        "scans_per_minute": round(IMAGES / seconds * 60, 1),
        # The scans' Trivy processes, and the server's share when there is one.
        "trivy_cpu_seconds_per_scan": round((clients_cpu + server_cpu) / IMAGES, 3),
        # The runs' own: the workers and their step processes, less the Trivy clients they ran.
        "runs_cpu_seconds_per_scan": round((cpu["runs"] - clients_cpu) / IMAGES, 3),
        "registry_cpu_seconds_per_scan": round(cpu["registry"] / IMAGES, 3),
        "most_runs_at_once": max(sum(s <= t < e for s, e in spans) for t, _ in spans),
        "cores_busy": busy,
    }


def _cpu_by_part(workers, registry) -> dict[str, float]:
    """The CPU seconds used so far by the run workers with what they started (step processes,
    Trivy clients), and by the registry."""
    return {
        "runs": sum(tree_cpu_seconds(worker.pid) for worker in workers),
        "registry": process_cpu_seconds(registry.process.pid),
    }


def _scans_only(name: str, work: Path, db_cache: Path, expected, server: bool) -> dict:
    """The same 40 scans without Dagster: `Trivy.scan_image` from as many threads as the pool's
    default limit, as on a cluster where each run's own work lands on a pod of its own."""
    from gsv_pipelines.lib.core.settings import DEFAULT_SCAN_CONCURRENCY, find_trivy
    from gsv_pipelines.lib.scanning.trivy import Trivy
    from gsv_pipelines.lib.scanning.trivy_server import start_local

    here = work / name
    here.mkdir(parents=True)
    cache = here / "cache"
    shutil.copytree(db_cache, cache)
    binary, cpu_log = _cpu_wrapper(here, find_trivy())
    trivy_server = start_local(find_trivy(), cache, here / "logs") if server else None
    try:
        trivy = Trivy(
            binary=binary,
            cache_dir=cache,
            server_url=trivy_server.url if trivy_server else None,
            server_token=trivy_server.token if trivy_server else None,
        )
        started, cores = time.monotonic(), _cores_time()
        with ThreadPoolExecutor(DEFAULT_SCAN_CONCURRENCY) as pool:
            runs = list(pool.map(trivy.scan_image, [ref for ref, _ in expected.values()]))
        seconds = time.monotonic() - started
        busy = _busy_share(cores)
        server_cpu = children_cpu_seconds(trivy_server.process.pid) if trivy_server else 0.0
    finally:
        if trivy_server:
            trivy_server.stop()
    for run, (reference, cves) in zip(runs, expected.values(), strict=True):
        found = {
            v["VulnerabilityID"]
            for result in run.report.get("Results") or []
            for v in result.get("Vulnerabilities") or []
        }
        assert found == cves, f"{name}: {reference} found {sorted(found)}, not {sorted(cves)}"
    return {
        "seconds": round(seconds, 2),
        "scans_per_minute": round(IMAGES / seconds * 60, 1),
        "trivy_cpu_seconds_per_scan": round((_cpu_seconds(cpu_log) + server_cpu) / IMAGES, 3),
        "cores_busy": busy,
    }


def measure(latency_ms: int = 0) -> dict:
    """Both contenders, ROUNDS times each, on the cores this process may use; with
    `latency_ms`, every request to the registry delayed that much. Besides today's path and the
    server, today's lock with the steps in the run's process (`lock`): what the executor gives
    alone, and what the server adds to it. Today's path runs once (on one core its 40 runs
    take five minutes), and not with `latency_ms`: there the lock is what is compared."""
    from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES, write_trivy_db
    from gsv_pipelines.lib.scanning.trivy_cache import TrivyCache
    from tests.services.flaky_proxy import FlakyProxy
    from tests.services.registry import start_registry

    contenders = ([] if latency_ms else ["today"]) + ["server", "lock"]
    rounds: dict[str, list[dict]] = {f"{who}_dagster": [] for who in contenders}
    rounds |= {f"{who}_trivy": [] for who in ("lock", "server")}
    with tempfile.TemporaryDirectory(prefix="gsv-bench-scan-concurrency-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        proxy = None
        try:
            expected = _images(work, registry)
            if latency_ms:
                # Watched and scanned through the proxy: the runs' references name its address.
                proxy = FlakyProxy(registry.url).start()
                proxy.delay(latency_ms / 1000)
                expected = {
                    digest: (reference.replace(registry.host, proxy.host, 1), cves)
                    for digest, (reference, cves) in expected.items()
                }
            url = (proxy or registry).url
            db_cache = TrivyCache(work / "db")
            with db_cache.staging() as staged:
                write_trivy_db(staged, list(DEMO_ADVISORIES))
                db_cache.publish(staged)
            for n in range(ROUNDS):
                # Each round led by the next contender.
                for name in contenders[n % len(contenders) :] + contenders[: n % len(contenders)]:
                    if name == "today" and n:
                        continue
                    print(f"  {name} (round {n + 1}) ...", file=sys.stderr, flush=True)
                    server = name == "server"
                    rounds[f"{name}_dagster"].append(
                        _contender(
                            f"{name}{n}",
                            work,
                            registry,
                            url,
                            db_cache.root,
                            expected,
                            server,
                            per_step_processes=name == "today",
                        )
                    )
                    if f"{name}_trivy" in rounds:
                        rounds[f"{name}_trivy"].append(
                            _scans_only(f"{name}{n}-trivy", work, db_cache.root, expected, server)
                        )
        finally:
            if proxy:
                proxy.stop()
            registry.stop()

    def median(name: str, figure: str) -> float:
        return round(statistics.median(r[figure] for r in rounds[name]), 3)

    return {
        "cores": len(os.sched_getaffinity(0)),
        "latency_ms": latency_ms,
        **{
            f"{name}_{figure}": median(name, figure)
            for name in rounds
            for figure in rounds[name][0]
            if figure.endswith(("scans_per_minute", "cpu_seconds_per_scan", "cores_busy"))
        },
        "rounds": rounds,
    }


def _measure_on(cores: str, latency_ms: int = 0) -> dict:
    """measure() in a child pinned to `cores`, so that the registry, Dagster and every Trivy
    process it starts share them."""
    child = [sys.executable, "-m", "benchmarks.bench_scan_concurrency", "--latency-ms"]
    done = subprocess.run(
        ["taskset", "-c", cores, *child, str(latency_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> dict:
    from gsv_pipelines.lib.core.settings import DEFAULT_SCAN_CONCURRENCY

    available = len(os.sched_getaffinity(0))
    by_cores = {}
    for cores in CORE_SETS:
        if len(cores.split(",")) <= available:
            print(f"  on cores {cores} ...", file=sys.stderr, flush=True)
            by_cores[len(cores.split(","))] = _measure_on(cores)
    top = by_cores[max(by_cores)]
    far = None
    if max(by_cores) == 2:
        print(f"  on cores 0,1, {LATENCY_MS} ms a registry request ...", file=sys.stderr)
        far = _measure_on("0,1", LATENCY_MS)

    def spm(r: dict, who: str, how: str = "dagster") -> float:
        return r[f"{who}_{how}_scans_per_minute"]

    # figure: (the contender, its baseline, runs or scans alone, the measurement)
    figures = {
        "scans_per_minute": ("server", "today", "dagster", top),
        "steps_in_run_scans_per_minute": ("lock", "today", "dagster", top),
        "trivy_scans_per_minute": ("server", "lock", "trivy", top),
    }
    if far:
        figures[f"rtt{LATENCY_MS}ms_scans_per_minute"] = ("server", "lock", "dagster", far)

    def ratio(r: dict, who: str, base: str, how: str = "dagster") -> float:
        return round(spm(r, who, how) / spm(r, base, how), 2)

    def cpu(r: dict, who: str) -> str:
        return (
            f"Trivy {r[f'{who}_dagster_trivy_cpu_seconds_per_scan']} s, the run "
            f"{r[f'{who}_dagster_runs_cpu_seconds_per_scan']} s, the registry "
            f"{r[f'{who}_dagster_registry_cpu_seconds_per_scan']} s"
        )

    def cores(n: int, r: dict) -> str:
        return (
            f"{n} core(s): runs {ratio(r, 'server', 'today')}x ({spm(r, 'server')} vs "
            f"{spm(r, 'today')} scans/min), the steps in the run's process alone "
            f"{ratio(r, 'lock', 'today')}x ({spm(r, 'lock')}), the server on top of them "
            f"{ratio(r, 'server', 'lock')}x; scans alone through the server "
            f"{ratio(r, 'server', 'lock', 'trivy')}x ({spm(r, 'server', 'trivy')} vs "
            f"{spm(r, 'lock', 'trivy')}); CPU a scan today: {cpu(r, 'today')}; as shipped: "
            f"{cpu(r, 'server')}; cores busy: today {r['today_dagster_cores_busy']:.0%}, "
            f"the lock {r['lock_dagster_cores_busy']:.0%}, the server "
            f"{r['server_dagster_cores_busy']:.0%}"
        )

    summary = "; ".join(cores(n, r) for n, r in by_cores.items())
    if far:
        summary += (
            f"; 2 cores, {LATENCY_MS} ms a registry request, the steps in the run's process: "
            f"runs through the server {ratio(far, 'server', 'lock')}x the lock's "
            f"({spm(far, 'server')} vs {spm(far, 'lock')} scans/min, cores busy "
            f"{far['lock_dagster_cores_busy']:.0%} with the lock), scans alone "
            f"{ratio(far, 'server', 'lock', 'trivy')}x ({spm(far, 'server', 'trivy')} vs "
            f"{spm(far, 'lock', 'trivy')})"
        )
    return {
        "name": "scan_concurrency",
        "what": f"{IMAGES} distinct images pushed at once, one sensor tick, {IMAGES} "
        f"image_scan_job runs (the scan and its two gates) {_run_workers()} at a time, as "
        "shipped: the steps in the run's process, through the Trivy server with the trivy_scan "
        f"pool at {DEFAULT_SCAN_CONCURRENCY} (on {max(by_cores)} cores); steps_in_run: the steps "
        "in the run's process, Trivy on its own; trivy: the scans without Dagster's runs; "
        f"rtt{LATENCY_MS}ms: through the server, the registry {LATENCY_MS} ms away",
        "baseline_what": "scans_per_minute, steps_in_run: as before issue 17, a process a step "
        "(Dagster's default executor), every scan Trivy on its own, one at a time on the cache's "
        "lock; trivy and rtt: Trivy on its own, one at a time (the steps in the run's process)",
        "goal": ">= 1.8x today's scans per minute on 2 cores",
        "measured": {f: spm(r, who, how) for f, (who, _, how, r) in figures.items()},
        "baseline": {f: spm(r, base, how) for f, (_, base, how, r) in figures.items()},
        "ratio": {f: ratio(r, who, base, how) for f, (who, base, how, r) in figures.items()},
        "summary": summary,
        "by_cores": by_cores,
        f"rtt{LATENCY_MS}ms": far,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="on 1 and 2 cores, as make bench does")
    parser.add_argument("--latency-ms", type=int, default=0, help="added to registry requests")
    args = parser.parse_args()
    if args.all:
        print(json.dumps(run(), indent=2))
    else:
        print(json.dumps(measure(args.latency_ms)))
