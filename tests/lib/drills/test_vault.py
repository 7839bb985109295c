"""Vault drills against real OpenBao on raft: a snapshot restored into a scratch OpenBao, unsealed
with the source's keys, and its sentinel read back."""

import json
import os
import signal
from datetime import UTC, datetime

import hvac
import pytest
from hvac.api.system_backend.init import Init

from gsv_pipelines.lib.backups.make import backup_vault
from gsv_pipelines.lib.backups.policy import TargetPolicy
from gsv_pipelines.lib.core import manifest as manifests
from gsv_pipelines.lib.core.openbao import LocalServer, start_raft_server
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.drills.restore import DRILL, RestoreRequest, remove_leftovers, restore
from gsv_pipelines.lib.drills.scratch import PREFIX, marker
from gsv_pipelines.lib.drills.vault import VaultHandler


def start_keyed_raft_server(root) -> tuple[LocalServer, tuple[str, ...]]:
    """A raft OpenBao, and its unseal keys (start_raft_server keeps them to itself)."""
    keys = []
    original = Init.initialize

    def initialize(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        keys.extend(result["keys"])
        return result

    Init.initialize = initialize
    try:
        server = start_raft_server(root)
    finally:
        Init.initialize = original
    return server, tuple(keys)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    server, keys = start_keyed_raft_server(tmp_path_factory.mktemp("vault-source"))
    yield server, keys
    server.stop()


def _handler(server, store, scratch, keys=()):
    return VaultHandler(
        lambda: hvac.Client(url=server.addr, token=server.token),
        store,
        scratch,
        login=lambda addr: hvac.Client(url=addr, token=server.token),
        unseal_keys=keys,
    )


def test_a_snapshot_restores_into_a_scratch_openbao_holding_the_sentinel(source, tmp_path):
    server, keys = source
    store = ArtefactStore(str(tmp_path / "store"))
    client = hvac.Client(url=server.addr, token=server.token)
    manifest = backup_vault(client, store, TargetPolicy()).manifest
    sentinel = manifest.details["sentinel"]
    assert sentinel["path"] == "gsv-dr/sentinel" and len(sentinel["nonce"]) == 32
    # Written after the snapshot: the copy must hold the backup's sentinel, not this one.
    client.secrets.kv.v2.create_or_update_secret(path="gsv-dr/sentinel", secret={"nonce": "later"})

    evidence = restore(
        _handler(server, store, tmp_path / "scratch", keys),
        store,
        RestoreRequest("vault", "vault", DRILL),
        run_id="run-vault-1",
    )

    assert evidence.error is None and evidence.verified, evidence.error
    checks = {c.name: (c.passed, c.detail) for c in evidence.checks}
    assert checks["sentinel_secret"] == (
        True,
        f"secret/gsv-dr/sentinel version {sentinel['version']} holds the nonce written just "
        "before the snapshot",
    )
    assert checks["unsealed"][0] is True
    assert evidence.destination.startswith(f"{PREFIX}vault_")
    assert list((tmp_path / "scratch").iterdir()) == []
    assert keys[0] not in json.dumps(evidence.to_dict())


def test_without_the_source_keys_the_copy_stays_sealed_and_the_drill_fails(source, tmp_path):
    server, _ = source
    store = ArtefactStore(str(tmp_path / "store"))
    backup_vault(hvac.Client(url=server.addr, token=server.token), store, TargetPolicy())
    evidence = restore(
        _handler(server, store, tmp_path / "scratch"),
        store,
        RestoreRequest("vault", "vault", DRILL),
        run_id="run-vault-2",
    )
    assert not evidence.verified
    [unsealed] = [c for c in evidence.checks if c.name == "unsealed"]
    assert unsealed.passed is False and "unseal_keys_env" in unsealed.detail
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_sentinel_that_differs_fails_the_drill(source, tmp_path):
    server, keys = source
    store = ArtefactStore(str(tmp_path / "store"))
    manifest = backup_vault(
        hvac.Client(url=server.addr, token=server.token), store, TargetPolicy()
    ).manifest
    manifest.details["sentinel"]["nonce"] = "0" * 32
    manifests.commit(store, manifest)
    evidence = restore(
        _handler(server, store, tmp_path / "scratch", keys),
        store,
        RestoreRequest("vault", "vault", DRILL),
        run_id="run-vault-3",
    )
    [sentinel] = [c for c in evidence.checks if c.name == "sentinel_secret"]
    assert sentinel.passed is False and "differs from what the backup wrote" in sentinel.detail
    assert not evidence.verified


def test_a_scratch_openbao_left_running_by_a_killed_drill_is_stopped_and_removed(source, tmp_path):
    server, _ = source
    store = ArtefactStore(str(tmp_path / "store"))
    manifest = backup_vault(
        hvac.Client(url=server.addr, token=server.token), store, TargetPolicy()
    ).manifest
    handler = _handler(server, store, tmp_path / "scratch")
    name = f"{PREFIX}vault_killed"
    handler.restore(
        manifest, name, marker("killed-run", DRILL, "vault", "vault", datetime.now(UTC))
    )
    pid = handler._servers.pop(name).process.pid  # as if the drill's process had died
    try:
        assert _running(pid)
        removed = remove_leftovers(_handler(server, store, tmp_path / "scratch"), set())
        assert len(removed) == 1 and name in removed[0]
        assert not (tmp_path / "scratch" / name).exists()
        assert not _running(pid)
    finally:
        if _running(pid):
            os.killpg(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
