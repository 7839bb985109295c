"""The `gsv` commands of the embedded defaults: `gsv seed`, `gsv demo`, `gsv dev`.

They start what the embedded defaults need (a throwaway OpenBao on raft storage, a Trivy server on
the demo DB, a local receiver for the alerts), seed the demo data, and either run every named job
once and report (`demo`) or open the UI (`dev`); they stop everything they started.
"""

import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import requests

from gsv_pipelines.demo import data as demo_data
from gsv_pipelines.demo import images as demo_images
from gsv_pipelines.demo import usage_sim
from gsv_pipelines.demo.oci_image import FAKE_GITHUB_TOKEN
from gsv_pipelines.lib.core.dagster_home import prepare_dagster_home
from gsv_pipelines.lib.core.leaks import leak_search
from gsv_pipelines.lib.core.openbao import start_raft_server
from gsv_pipelines.lib.core.processes import ManagedProcess
from gsv_pipelines.lib.core.settings import Settings, load_settings
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.vault import VaultResource

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_ROTATION_POLICY = Path(__file__).resolve().parents[1] / "policies" / "rotation-demo.yaml"
# The simulated usage `gsv seed` writes: this many days, ending yesterday.
SEEDED_USAGE_DAYS = 7


def _say(message: str) -> None:
    print(f"gsv: {message}", flush=True)


def install_day(data_dir: Path) -> date:
    """The day this data directory was first used by `gsv demo` or `gsv dev` (recorded then)."""
    marker = data_dir / "installed-on"
    if not marker.exists():
        marker.write_text(datetime.now(UTC).date().isoformat() + "\n")
    return date.fromisoformat(marker.read_text().strip())


def _partition_starts(settings: Settings) -> dict[str, str]:
    """Unless configured: the daily partitions start on the install day, usage's on the first day
    of the usage seeded then, so that the UI counts no day that could never have been filled."""
    installed = install_day(settings.data_dir)
    starts = {
        "GSV_PARTITIONS_START": installed,
        "GSV_USAGE_PARTITIONS_START": installed - timedelta(days=SEEDED_USAGE_DAYS),
    }
    chosen = {}
    for name, day in starts.items():
        if not os.environ.get(name, "").strip():
            os.environ[name] = day.isoformat()
        chosen[name] = os.environ[name]
    return chosen


@contextlib.contextmanager
def local_services(settings: Settings) -> Iterator[dict]:
    """Start what the embedded defaults need and stop it afterwards.

    Vault: a throwaway one-node OpenBao on raft storage (so raft snapshots work as in
    production), unless VAULT_TOKEN points at a running one. Qdrant and the SQLite files need no
    server: they are folders and files under GSV_DATA_DIR.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services: dict = {"data_dir": str(settings.data_dir), "partitions": _partition_starts(settings)}
    if not settings.rotation_policy:
        # The shipped policy's PostgreSQL A/B password needs a server the demo does not have.
        os.environ["GSV_ROTATION_POLICY"] = str(DEMO_ROTATION_POLICY)
        services["rotation_policy"] = str(DEMO_ROTATION_POLICY)
    bao = None
    if "VAULT_TOKEN" not in settings.secrets_set:
        bao = start_raft_server(settings.data_dir / "openbao")
        os.environ["VAULT_ADDR"] = bao.addr
        os.environ["VAULT_TOKEN"] = bao.token
        _say(f"started OpenBao (raft storage) at {bao.addr} (pid {bao.process.pid})")
    vault = VaultResource(addr=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
    health = vault.client().sys.read_health_status(method="GET")
    services["vault"] = {
        "address": vault.addr,
        "server": "OpenBao on raft storage (started by gsv)" if bao else "external",
        "version": health.get("version"),
    }
    services["qdrant"] = (
        {"mode": "server", "url": settings.qdrant_url}
        if settings.qdrant_url
        else {"mode": "embedded", "path": str(settings.qdrant_path)}
    )
    trivy = None
    try:
        trivy = _start_trivy_server(settings, services)
        yield services
    finally:
        if trivy:
            trivy.stop()
            for name in ("GSV_TRIVY_SERVER_URL", "GSV_TRIVY_SERVER_TOKEN"):
                os.environ.pop(name, None)
            _say("stopped the Trivy server")
        if bao:
            bao.stop()
            os.environ.pop("VAULT_TOKEN", None)
            _say("stopped OpenBao")


ALERT_VARIABLES = (
    "GSV_SLACK_WEBHOOK_URL",
    "GSV_TEAMS_WEBHOOK_URL",
    "GSV_ALERT_WEBHOOK_URL",
    "GSV_ALERT_WEBHOOK_SECRET",
)


@contextlib.contextmanager
def alert_receiver() -> Iterator[tuple]:
    """A receiver on loopback that plays Slack, Teams and the signed webhook: the demo's alerts
    go there (never to channels the environment names). Yields it, its secret values (the key
    and the URLs, which carry random tokens as real webhook URLs do) and each path's channel."""
    from gsv_pipelines.lib.alerts.receiver import LocalReceiver

    token, key = secrets.token_hex(12), secrets.token_urlsafe(24)
    paths = {
        "GSV_SLACK_WEBHOOK_URL": f"/services/T0DEMO/B0DEMO/{token}",
        "GSV_TEAMS_WEBHOOK_URL": f"/webhookb2/demo/{token}",
        "GSV_ALERT_WEBHOOK_URL": f"/gsv-alerts/{token}",
    }
    saved = {name: os.environ.get(name) for name in ALERT_VARIABLES}
    with LocalReceiver(key, paths["GSV_ALERT_WEBHOOK_URL"]) as receiver:
        urls = {name: receiver.url(path) for name, path in paths.items()}
        os.environ.update(urls, GSV_ALERT_WEBHOOK_SECRET=key)
        _say(f"alerts go to a local receiver on {receiver.url('')} (Slack, Teams, webhook)")
        try:
            channels = dict(zip(paths.values(), ("slack", "teams", "webhook"), strict=True))
            yield receiver, [key, token, *urls.values()], channels
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _start_trivy_server(settings: Settings, services: dict):
    """The Trivy server every scan of the runs goes through (any number at once), unless
    GSV_TRIVY_SERVER_URL names one; it serves the cache's DB, so the demo DB is seeded first."""
    from gsv_pipelines.lib.scanning import trivy_server

    if settings.trivy_server_url:
        services["trivy"] = {"server": settings.trivy_server_url, "started": False}
        return None
    if not settings.trivy_bin:
        services["trivy"] = {"server": None, "note": "no trivy binary: scans fail clearly"}
        return None
    demo_data.seed_trivy_db(settings.trivy_cache_dir)
    server = trivy_server.start_local(
        settings.trivy_bin, settings.trivy_cache_dir, settings.data_dir / "logs"
    )
    os.environ["GSV_TRIVY_SERVER_URL"] = server.url
    os.environ["GSV_TRIVY_SERVER_TOKEN"] = server.token
    services["trivy"] = {"server": server.url, "started": True}
    _say(f"started the Trivy server at {server.url} (pid {server.process.pid})")
    return server


def _set_scan_pool(settings: Settings) -> None:
    """The trivy_scan pool's limit on the local instance: GSV_SCAN_CONCURRENCY scans at once."""
    import dagster as dg

    from gsv_pipelines.defs.scanning.image_scan import SCAN_POOL

    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(SCAN_POOL, settings.scan_concurrency)


def seed(settings: Settings, scale: float = 1.0) -> dict:
    """Seed Qdrant, the platform DB, and Vault when VAULT_TOKEN is set; return what was written."""
    if settings.is_prod:
        raise SystemExit("gsv seed writes demo data: it refuses to run with GSV_ENV=prod")
    qdrant = QdrantResource(
        url=settings.qdrant_url,
        api_key=os.environ.get("GSV_QDRANT_API_KEY"),
        path=str(settings.qdrant_path),
    )
    # Closed right after: the embedded store is locked while a client holds it open.
    with qdrant.open() as client:
        result = {"qdrant": demo_data.seed_qdrant(client, scale=scale)}
    result["platform_db"] = demo_data.seed_platform_db(settings.platform_db_url)
    # A week of simulated usage ending yesterday: the usage group's partitions.
    result["usage"] = usage_sim.seed_usage(
        settings.platform_db_url, days=SEEDED_USAGE_DAYS, scale=scale, seed=7
    )
    result["trivy_db"] = demo_data.seed_trivy_db(settings.trivy_cache_dir)
    result["images"] = demo_images.seed_images(
        settings.data_dir / "images", settings.image_inventory
    )
    if os.environ.get("VAULT_TOKEN"):
        vault = VaultResource(addr=settings.vault_addr, token=os.environ["VAULT_TOKEN"])
        result["vault"] = demo_data.seed_vault(vault.client())
    else:
        result["vault"] = "skipped: VAULT_TOKEN is not set"
    return result


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


# Metadata shown in the summary table (all figures go to the JSON summary).
TABLE_METADATA = (
    "method",
    "points",
    "rows",
    "bytes",
    "duration_seconds",
    "secrets",
    "overdue",
    "oldest_age_days",
    "action",
    "version_before",
    "version_after",
    "origin",
    "vulnerabilities_critical",
    "fixable_critical",
    "vulnerabilities",
    "failures_high",
    "failures_critical",
    "digests",
    "failing",
    "new_findings",
    "result",
    "rto_seconds_max",
    "rpo_hours_max",
)


def demo(settings: Settings, scale: float = 1.0) -> int:
    import dagster as dg

    from gsv_pipelines.definitions import defs as load_defs
    from gsv_pipelines.demo.run import (
        demo_plan,
        run_alert_sensors,
        run_plan,
        start_alert_sensors,
        sync_partitions,
    )

    started = datetime.now(UTC)
    home = prepare_dagster_home(settings)
    _set_scan_pool(settings)
    with (
        local_services(settings) as services,
        alert_receiver() as (receiver, alert_secrets, channels),
    ):
        seeded = seed(load_settings(), scale=scale)
        _say("seeded demo data")
        defs = load_defs()
        with dg.DagsterInstance.get() as instance:
            partitions = sync_partitions(defs, instance)
            # As image_push_sensor does for a push: each demo image's digest becomes a partition.
            digests = [image["digest"] for image in seeded["images"].values()]
            instance.add_dynamic_partitions("image_digests", digests)
            partitions["image_digests"] = f"added {len(digests)} demo image digests"
            # Every seeded usage day, oldest first, so month-to-date figures build up as in prod.
            usage_days = [str(day) for day in seeded["usage"]["partitions"]]
            plan = demo_plan(defs, instance, seeded["images"], usage_days)
            cursors = start_alert_sensors(defs, instance)
            outcome = run_plan(defs, instance, plan)
            alert_ticks = run_alert_sensors(defs, instance, cursors)
        received = _keep_received(settings, receiver.received, channels)
        values = demo_data.vault_values(
            VaultResource(addr=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"]).client()
        )
        # The planted fake token and the alert channels' URLs and key must not reach Dagster's
        # storage, the alerts (as received, and in the store: incidents, dead letters) either.
        values = [*values, FAKE_GITHUB_TOKEN, *alert_secrets]
        # ... nor the Trivy server's token.
        if os.environ.get("GSV_TRIVY_SERVER_TOKEN"):
            values.append(os.environ["GSV_TRIVY_SERVER_TOKEN"])
        leaks = [
            found
            for root in (home, settings.data_dir / RECEIVED, _local_alerts_folder(settings))
            if root is not None and root.exists()
            for found in leak_search(root, values)
        ]
    expected = _expected_gate_failures(seeded["images"])
    problems = _unexpected_problems(outcome["assets"], expected)
    cve_alert = _planted_cve_alert(received, seeded["images"])
    if cve_alert is None:
        problems.append("the planted critical CVE's alert did not reach the local receiver, signed")
    summary = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "dagster_home": str(home),
        "services": services,
        "seed": seeded,
        "partitions": partitions,
        "leak_search": {"values": len(values), "found": leaks},
        **outcome,
        "alerts": {
            "received": {
                channel: sum(r["channel"] == channel for r in received)
                for channel in ("slack", "teams", "webhook")
            },
            "webhook": [r["message"]["title"] for r in received if r["channel"] == "webhook"],
            "signatures_verified": all(
                r["verified"] for r in received if r["channel"] == "webhook"
            ),
            "planted_cve_alert": cve_alert,
            "sensor_ticks": alert_ticks,
        },
        # Every run succeeded but those the demo means to fail (their gates, by design).
        "runs_all_succeeded": outcome["success"],
        "success": not problems,
        "problems": problems,
        "expected_gate_failures": sorted(f"{asset} [{key}]" for asset, key in expected),
    }
    path = settings.data_dir / "demo_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")

    print()
    _print_table(
        [[name, count] for name, count in seeded["qdrant"].items()],
        ["qdrant collection (seeded)", "points"],
    )
    print()
    vault_rows = seeded["vault"].items() if isinstance(seeded["vault"], dict) else []
    _print_table([[p, s] for p, s in vault_rows], ["vault secret (seeded)", "state"])
    print()
    if outcome["assets"]:
        rows = [
            [
                a["asset"],
                a["job"],
                _short(a["partition"] or ""),
                a["status"],
                " ".join(
                    f"{n}:{'pass' if ok else 'warn' if n in a['warnings'] else 'FAIL'}"
                    for n, ok in a["checks"].items()
                ),
                ", ".join(f"{k}={v}" for k, v in _figures(a["metadata"])),
            ]
            for a in outcome["assets"]
        ]
        _print_table(rows, ["asset", "job", "partition", "status", "checks", "figures"])
    else:
        print("No assets are defined yet: the demo materializes whatever the code location holds.")
    print()
    _say(
        f"leak search: {len(values)} secret values (every version in Vault, the planted fake "
        f"token, the alert channels' URLs and key, the Trivy server's token) searched for in "
        f"everything under {home}, the alerts received and the store's alerts/: "
        f"{len(leaks)} found"
    )
    for leak in leaks:
        _say(f"  LEAK {leak}")
    _say(f"summary written to {path}")
    _say("open the UI with `make dev` (dagster dev on http://127.0.0.1:3000)")
    _print_risk_report(settings, outcome["assets"], expected)
    _print_alerts(received, cve_alert)
    _print_drill(outcome["assets"])
    _print_usage(settings, seeded["usage"])
    for problem in problems:
        _say(f"  FAILED {problem}")
    return 0 if not problems and not leaks else 1


RECEIVED = "alerts-received"


def _keep_received(settings: Settings, received: list, channels: dict[str, str]) -> list[dict]:
    """What the receiver got, by channel, also written to $GSV_DATA_DIR/alerts-received/."""
    folder = settings.data_dir / RECEIVED
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    kept = []
    for n, message in enumerate(received):
        channel = channels[message.path]
        body = message.json()
        (folder / f"{n:03d}-{channel}.json").write_text(json.dumps(body, indent=2) + "\n")
        kept.append({"channel": channel, "verified": message.verified, "message": body})
    return kept


def _local_alerts_folder(settings: Settings) -> Path | None:
    """The store's alerts/ folder (incidents, dead letters) when the store is a local folder."""
    from gsv_pipelines.lib.core.store import ArtefactStore

    store = ArtefactStore(settings.store_url)
    return Path(store.root) / "alerts" if store.fs.protocol[0] in ("file", "local") else None


def _planted_cve_alert(received: list[dict], images: dict) -> dict | None:
    """The signed webhook message about agent-runtime's fixable critical CVE, if it arrived."""
    digest = images["agents/agent-runtime"]["digest"]
    for r in received:
        subject = r["message"].get("subject", {}) if r["channel"] == "webhook" else {}
        if (
            r["verified"]
            and r["message"]["status"] == "firing"
            and subject.get("check") == "no_fixable_critical"
            and subject.get("partition") == digest
        ):
            return r["message"]
    return None


def _print_alerts(received: list[dict], cve_alert: dict | None) -> None:
    counts = {c: sum(r["channel"] == c for r in received) for c in ("slack", "teams", "webhook")}
    _say(
        "alerts delivered to the local receiver: "
        + ", ".join(f"{n} to {channel}" for channel, n in counts.items())
    )
    for r in received:
        if r["channel"] == "webhook":
            m = r["message"]
            _say(f"  [{m['severity']}/{m['status']}] {m['title']}")
    if cve_alert:
        print()
        print("The planted critical CVE's alert, as the webhook received it (signature verified):")
        print(json.dumps(cve_alert, indent=2))
        print()


def _figures(metadata: dict) -> list[tuple[str, object]]:
    """The TABLE_METADATA figures, also when named per target (`<collection> points`)."""
    shown = []
    for name in TABLE_METADATA:
        for key, value in metadata.items():
            if key == name or key.endswith(f" {name}"):
                shown.append((name, value))
                break
    return shown


def _short(partition: str) -> str:
    """An image digest cut to its first 12 hex digits; other partitions as they are."""
    return partition[:19] + "…" if partition.startswith("sha256:") else partition


def _expected_gate_failures(images: dict) -> set[tuple[str, str]]:
    """The gates the demo means to trip: agent-runtime carries a fixable critical CVE of the
    demo DB and a planted fake token, so both of its scan checks fail, by design."""
    digest = images["agents/agent-runtime"]["digest"]
    return {("scanning/image_scan", digest)}


def _unexpected_problems(assets: list[dict], expected: set[tuple[str, str]]) -> list[str]:
    problems = []
    for a in assets:
        where = a["asset"] + (f" [{a['partition']}]" if a["partition"] else "")
        if a["status"] != "materialized":
            problems.append(f"{where}: not materialized")
        failed = [n for n, ok in a["checks"].items() if not ok and n not in a["warnings"]]
        if failed and (a["asset"], a["partition"]) not in expected:
            problems.append(f"{where}: check(s) {', '.join(failed)} failed")
    return problems


def _print_usage(settings: Settings, seeded: dict) -> None:
    """The last seeded day's per-tenant and per-agent tables, from the warehouse."""
    from gsv_pipelines.lib.usage import report as usage_report

    day = date.fromisoformat(max(seeded["partitions"]))
    try:
        tables = usage_report.day_tables(settings.warehouse_url, day)
    except Exception as exc:  # the table is a courtesy: the runs above said what failed
        _say(f"no usage tables for {day}: {type(exc).__name__}: {exc}")
        return
    print()
    print(f"Usage on {day} (from the warehouse tables):")
    _print_table(tables["tenants"], usage_report.TENANT_HEADER)
    print()
    _print_table(tables["agents"], usage_report.AGENT_HEADER)
    print()


def _print_drill(assets: list[dict]) -> None:
    """Each drill target's RTO and RPO, and where the auditors' report is."""
    for a in assets:
        figures = a["metadata"]
        if a["asset"] == "drills/dr_drill":
            for key, rto in figures.items():
                if key.endswith(" rto_seconds"):
                    target = key.removesuffix(" rto_seconds")
                    rpo = figures.get(f"{target} rpo_hours")
                    _say(f"DR drill {target}: RTO {rto:.2f} s, RPO {rpo:.3f} h")
        if a["asset"] == "drills/dr_report" and "report_path" in figures:
            _say(f"DR drill report ({figures.get('result')}): {figures['report_path']}")


def _print_risk_report(settings: Settings, assets: list[dict], expected) -> None:
    from gsv_pipelines.lib.core.store import ArtefactStore

    for digest in sorted(d for _, d in expected):
        _say(
            f"expected: {digest[:19]}… (agents/agent-runtime) fails no_fixable_critical and "
            "no_embedded_secrets: the demo image carries a fixable critical CVE and a fake token"
        )
    report = next((a for a in assets if a["asset"] == "scanning/image_risk_report"), None)
    if report is None or report["status"] != "materialized":
        return
    store = ArtefactStore(settings.store_url)
    key = f"scanning/risk/{report['partition']}/report.md"
    if store.exists(key):
        print()
        print(store.open(key).read().decode().strip())
        print()
        _say(f"risk report: {store.location(key)}")


def dev(settings: Settings, host: str, port: int, scale: float = 1.0) -> int:
    prepare_dagster_home(settings)
    _set_scan_pool(settings)
    with local_services(settings):
        seed(load_settings(), scale=scale)
        argv = [sys.executable, "-m", "dagster", "dev", "-h", host, "-p", str(port)]
        workspace = PROJECT_ROOT / "workspace.yaml"
        argv += (
            ["-w", str(workspace)] if workspace.exists() else ["-m", "gsv_pipelines.definitions"]
        )
        webserver = ManagedProcess(
            "dagster dev", argv, settings.data_dir / "logs" / "dagster-dev.log"
        )
        webserver.start()
        try:
            webserver.wait_ready(
                lambda: requests.get(f"http://{host}:{port}/server_info", timeout=1).ok, timeout=120
            )
            _say(f"Dagster UI at http://{host}:{port}  (log: {webserver.log_path}; Ctrl-C stops)")
            while webserver.proc.poll() is None:
                time.sleep(0.5)
            _say(f"dagster dev exited with code {webserver.proc.returncode}")
            return webserver.proc.returncode or 0
        except KeyboardInterrupt:
            _say("stopping dagster dev and the local services")
            return 0
        finally:
            webserver.stop(timeout=30)
