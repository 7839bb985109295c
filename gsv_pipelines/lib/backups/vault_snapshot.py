"""Raft snapshots of Vault / OpenBao (`sys/storage/raft/snapshot`), streamed into the store.

A raft snapshot is a gzip'd tar of `meta.json`, `state.bin` and `SHA256SUMS` (plus a sealed copy
of the sums). Besides the digest of the whole file, `check_archive` re-reads the stored copy and
checks every member against the archive's own SHA256SUMS: a truncated or garbled snapshot fails.
"""

import hashlib
import json
import secrets
import tarfile
from datetime import UTC, datetime
from typing import Any

import hvac
import hvac.exceptions
import requests

from gsv_pipelines.lib.core.store import CHUNK, ArtefactStore, StoredFile

# A canary, not a secret: a random nonce written just before each snapshot, read back by drills.
SENTINEL_MOUNT = "secret"
SENTINEL_PATH = "gsv-dr/sentinel"


class VaultSnapshotError(RuntimeError):
    """A raft snapshot could not be taken or does not check out."""


def write_sentinel(client: hvac.Client) -> dict[str, Any]:
    """Write a fresh nonce to the sentinel path; what a restored copy must hold.

    Without a KV v2 mount there or the right to write it, the reason is returned instead (the
    snapshot is still taken; a drill then cannot read the sentinel back, and says so).
    """
    nonce = secrets.token_hex(16)
    written_at = datetime.now(UTC).isoformat()
    try:
        response = client.secrets.kv.v2.create_or_update_secret(
            path=SENTINEL_PATH,
            secret={"nonce": nonce, "written_at": written_at},
            mount_point=SENTINEL_MOUNT,
        )
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        return {
            "mount": SENTINEL_MOUNT,
            "path": SENTINEL_PATH,
            "error": f"could not write the sentinel: {type(exc).__name__}",
        }
    return {
        "mount": SENTINEL_MOUNT,
        "path": SENTINEL_PATH,
        "version": response["data"]["version"],
        "nonce": nonce,
        "written_at": written_at,
    }


def take_snapshot(client: hvac.Client, store: ArtefactStore, key: str) -> StoredFile:
    """Stream a raft snapshot of the server `client` is logged in to into `key`."""
    try:
        response = client.sys.take_raft_snapshot()
    except hvac.exceptions.Forbidden:
        raise VaultSnapshotError(
            "the Vault token may not read sys/storage/raft/snapshot (policy: read on that path)"
        ) from None
    except hvac.exceptions.VaultError as exc:
        # inmem storage (a dev server) has no raft: Vault answers with an error saying so.
        raise VaultSnapshotError(f"Vault refused a raft snapshot: {exc}") from None
    except requests.RequestException as exc:
        raise VaultSnapshotError(
            f"Vault unreachable for a raft snapshot: {type(exc).__name__}"
        ) from None
    with response:
        try:
            return store.write_stream(key, response.iter_content(CHUNK))
        except requests.RequestException as exc:
            store.delete(key)
            raise VaultSnapshotError(f"the raft snapshot download broke off: {exc}") from None


def check_archive(store: ArtefactStore, key: str) -> dict[str, Any]:
    """Check every member of the stored snapshot against its SHA256SUMS; return meta.json."""
    digests: dict[str, str] = {}
    sums: dict[str, str] = {}
    meta: dict[str, Any] = {}
    try:
        with store.open(key) as raw, tarfile.open(fileobj=raw, mode="r|gz") as archive:
            for member in archive:
                content = archive.extractfile(member) if member.isfile() else None
                if content is None:
                    continue
                digest = hashlib.sha256()
                data = b""
                for chunk in iter(lambda f=content: f.read(CHUNK), b""):
                    digest.update(chunk)
                    if member.name in ("SHA256SUMS", "meta.json"):
                        data += chunk
                digests[member.name] = digest.hexdigest()
                if member.name == "SHA256SUMS":
                    for line in data.decode().splitlines():
                        checksum, _, name = line.partition("  ")
                        sums[name.strip()] = checksum.strip()
                elif member.name == "meta.json":
                    meta = json.loads(data)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise VaultSnapshotError(f"the raft snapshot is not a readable archive: {exc}") from None
    if not sums:
        raise VaultSnapshotError("the raft snapshot has no SHA256SUMS")
    for name, expected in sums.items():
        if digests.get(name) != expected:
            raise VaultSnapshotError(f"the raft snapshot's {name} does not match its SHA256SUMS")
    return meta
