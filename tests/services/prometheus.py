"""Prometheus and Alertmanager from Debian (`prometheus`, `prometheus-alertmanager`), on
127.0.0.1 free ports, with configurations written for the test, stopped by PID."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from gsv_pipelines.lib.core.processes import ManagedProcess, ServiceError, free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def binary(path: str) -> str:
    if not Path(path).is_file():
        found = shutil.which(Path(path).name)
        if not found:
            raise ServiceError(f"{path} is missing: `make system-deps` installs it (Debian)")
        return found
    return path


@dataclass
class Server:
    url: str
    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()


def start_alertmanager(root: Path, webhook_url: str) -> Server:
    """An Alertmanager that sends every alert at once to `webhook_url` (no grouping delay)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {
            "receiver": "local",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "local", "webhook_configs": [{"url": webhook_url}]}],
    }
    (root / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess(
        "alertmanager",
        [
            binary(ALERTMANAGER),
            f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # One node: no gossip listener on every interface.
            "--cluster.listen-address=",
        ],
        root / "alertmanager.log",
    ).start()
    server = Server(f"http://127.0.0.1:{port}", process)
    process.wait_ready(lambda: requests.get(f"{server.url}/-/ready", timeout=1).ok)
    return server


def start_prometheus(
    root: Path, targets: list[str], rule_files: list[Path], alertmanager: str | None = None
) -> Server:
    """A Prometheus scraping `targets` (host:port, /metrics) every second, evaluating
    `rule_files` every second, sending alerts to `alertmanager` (a URL) if given."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "gsv-pipelines", "static_configs": [{"targets": targets}]}],
    }
    if alertmanager:
        host = alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess(
        "prometheus",
        [
            binary(PROMETHEUS),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        root / "prometheus.log",
    ).start()
    server = Server(f"http://127.0.0.1:{port}", process)
    process.wait_ready(lambda: requests.get(f"{server.url}/-/ready", timeout=1).ok, timeout=60)
    return server
