"""Raft snapshots of Vault / OpenBao (`sys/storage/raft/snapshot`), streamed into the store.

A raft snapshot is a gzip'd tar of `meta.json`, `state.bin` and `SHA256SUMS` (plus a sealed copy
of the sums). Besides the digest of the whole file, `check_archive` re-reads the stored copy and
checks every member against the archive's own SHA256SUMS: a truncated or garbled snapshot fails.
"""

import hashlib
import json
import tarfile
from typing import Any

import hvac
import hvac.exceptions
import requests

from gsv_pipelines.lib.store import CHUNK, BackupStore, StoredFile


class VaultSnapshotError(RuntimeError):
    """A raft snapshot could not be taken or does not check out."""


def take_snapshot(client: hvac.Client, store: BackupStore, key: str) -> StoredFile:
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


def check_archive(store: BackupStore, key: str) -> dict[str, Any]:
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
