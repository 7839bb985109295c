"""An S3 API on 127.0.0.1: moto's standalone server (`moto_server`)."""

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from gsv_pipelines.lib.core.processes import ManagedProcess, ServiceError, free_port

# moto accepts any credentials; these only satisfy the clients' need for some.
ACCESS_KEY = "gsv-test-access"
SECRET_KEY = "gsv-test-secret"


@dataclass
class S3Server:
    endpoint_url: str
    process: ManagedProcess

    def storage_options(self) -> dict:
        """fsspec/s3fs options for this endpoint."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "eu-west-1"},
        }

    def stop(self) -> None:
        self.process.stop()


def start_s3(log_dir: Path) -> S3Server:
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if not binary:
        raise ServiceError("moto_server is not installed: run `uv sync` (dev dependencies)")
    port = free_port()
    process = ManagedProcess(
        "moto", [binary, "-H", "127.0.0.1", "-p", str(port)], log_dir / "moto.log"
    ).start()
    server = S3Server(endpoint_url=f"http://127.0.0.1:{port}", process=process)
    process.wait_ready(lambda: requests.get(server.endpoint_url, timeout=1).ok)
    return server
