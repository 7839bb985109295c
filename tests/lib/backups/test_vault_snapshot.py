import gzip
import io
import tarfile

import hvac
import pytest

from gsv_pipelines.lib.backups.vault_snapshot import (
    VaultSnapshotError,
    check_archive,
    take_snapshot,
)
from gsv_pipelines.lib.core.store import ArtefactStore


def test_a_raft_snapshot_is_streamed_and_checks_out(openbao_raft, tmp_path):
    client = hvac.Client(url=openbao_raft.addr, token=openbao_raft.token)
    client.secrets.kv.v2.create_or_update_secret(path="sentinel", secret={"v": "1"})
    store = ArtefactStore(str(tmp_path))
    stored = take_snapshot(client, store, "vault/raft.snap")
    assert stored.size > 1000 and store.hash(stored.key) == stored
    meta = check_archive(store, stored.key)
    assert meta["Index"] > 0 and meta["Term"] >= 1


def test_a_member_that_does_not_match_its_sums_fails(openbao_raft, tmp_path):
    client = hvac.Client(url=openbao_raft.addr, token=openbao_raft.token)
    store = ArtefactStore(str(tmp_path))
    stored = take_snapshot(client, store, "raft.snap")
    # Rebuild the archive with one byte of state.bin changed and the sums left as they were.
    with store.open(stored.key) as raw, tarfile.open(fileobj=raw, mode="r:gz") as original:
        members = [(m, original.extractfile(m).read()) for m in original.getmembers()]
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for member, data in members:
            if member.name == "state.bin":
                data = bytes([data[0] ^ 1]) + data[1:]
            tar.addfile(member, io.BytesIO(data))
    store.write_stream("tampered.snap", [out.getvalue()])
    with pytest.raises(VaultSnapshotError, match=r"state\.bin does not match its SHA256SUMS"):
        check_archive(store, "tampered.snap")
    store.write_stream("truncated.snap", [out.getvalue()[:500]])
    with pytest.raises(VaultSnapshotError, match="not a readable archive"):
        check_archive(store, "truncated.snap")


def test_a_dev_server_without_raft_is_a_clear_error(openbao, tmp_path):
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    store = ArtefactStore(str(tmp_path))
    with pytest.raises(VaultSnapshotError, match="Vault refused a raft snapshot"):
        take_snapshot(client, store, "raft.snap")
    assert not store.exists("raft.snap")
