"""Generate a small Trivy vulnerability DB (schema v2) offline: for the tests, and for the demo
where no network reaches Trivy's DB. Its advisories are synthetic (CVE-2099-*) and its
metadata.json carries `"gsv_demo": true`, so nobody mistakes it for Trivy's real DB.

Layout written with the ``boltdb`` package (a pure-Python bbolt writer):

* ``<os>`` / ``<source package>`` / ``<CVE id>`` -> ``{"FixedVersion": ...}``
* ``vulnerability`` / ``<CVE id>`` -> title, description, severity, dates, ...
* ``data-source`` / ``<os>`` -> the Alpine secdb source description

``boltdb`` 0.0.2 leaves the meta page checksums at zero, which Go's bbolt rejects
("checksum error"), so they are filled in after writing.
"""

from __future__ import annotations

import json
import os
import struct
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from boltdb import BoltDB

# Trivy's severity scale (pkg/types/severity in trivy-db).
SEVERITY_LEVELS = {"UNKNOWN": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}

ALPINE_DATA_SOURCE = {
    "ID": "alpine",
    "Name": "Alpine Secdb",
    "URL": "https://secdb.alpinelinux.org/",
}


@dataclass(frozen=True)
class Advisory:
    """One vulnerability affecting a source (origin) package of a given OS release."""

    cve_id: str
    package: str
    fixed_version: str
    severity: str
    title: str
    os: str = "alpine 3.19"


# Synthetic ids (CVE-2099-*): test data matching oci_image.DEMO_PACKAGES, not real CVEs.
DEMO_ADVISORIES: tuple[Advisory, ...] = (
    Advisory("CVE-2099-0001", "openssl", "3.1.4-r5", "CRITICAL", "openssl: synthetic critical"),
    Advisory("CVE-2099-0002", "openssl", "3.1.4-r5", "HIGH", "openssl: synthetic high"),
    Advisory("CVE-2099-0003", "busybox", "1.36.1-r16", "MEDIUM", "busybox: synthetic medium"),
)

_META_STRUCT_OFFSET = 16  # bbolt page header: id u64, flags u16, count u16, overflow u32
_META_CHECKSUMMED = 56  # bytes of the meta struct covered by its checksum
_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3


class _BoltDB(BoltDB):
    """``BoltDB`` whose ``close`` is idempotent (the original also closes in ``__del__``)."""

    _closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            super().close()


def _fnv1a_64(data: bytes) -> int:
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def _fix_meta_checksums(db_path: Path) -> None:
    """Write the FNV-1a 64 checksum of both bbolt meta pages (pages 0 and 1)."""
    with open(db_path, "r+b") as f:
        f.seek(_META_STRUCT_OFFSET + 8)  # meta: magic u32, version u32, pageSize u32
        (page_size,) = struct.unpack("<I", f.read(4))
        for page in (0, 1):
            start = page * page_size + _META_STRUCT_OFFSET
            f.seek(start)
            checksum = _fnv1a_64(f.read(_META_CHECKSUMMED))
            f.seek(start + _META_CHECKSUMMED)
            f.write(struct.pack("<Q", checksum))


def _vulnerability_json(adv: Advisory, when: str) -> bytes:
    severity = adv.severity.upper()
    source_id = ALPINE_DATA_SOURCE["ID"]
    return json.dumps(
        {
            "Title": adv.title,
            "Description": f"Synthetic test advisory {adv.cve_id} for {adv.package}.",
            "Severity": severity,
            "VendorSeverity": {source_id: SEVERITY_LEVELS[severity]},
            "References": [f"https://example.invalid/advisories/{adv.cve_id}"],
            "PublishedDate": when,
            "LastModifiedDate": when,
        }
    ).encode()


def write_trivy_db(
    cache_dir: Path, advisories: list[Advisory], updated_at: datetime | None = None
) -> Path:
    """Write ``<cache_dir>/db/trivy.db`` and ``metadata.json`` for ``advisories``; return db path.

    Use with ``trivy ... --cache-dir <cache_dir> --skip-db-update --offline-scan``.
    An existing DB is replaced (written to a temp file, then renamed into place). `updated_at`:
    the DB's UpdatedAt (default now), which tells one DB from the next.
    """
    db_dir = Path(cache_dir) / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    db_path = db_dir / "trivy.db"
    tmp_path = db_dir / "trivy.db.tmp"
    tmp_path.unlink(missing_ok=True)

    now = (updated_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    by_os: dict[str, dict[str, list[Advisory]]] = defaultdict(lambda: defaultdict(list))
    for adv in advisories:
        by_os[adv.os][adv.package].append(adv)

    db = _BoltDB(str(tmp_path))
    try:
        with db.update() as tx:
            vulns = tx.create_bucket(b"vulnerability")
            sources = tx.create_bucket(b"data-source")
            for os_name, packages in sorted(by_os.items()):
                sources.put(os_name.encode(), json.dumps(ALPINE_DATA_SOURCE).encode())
                os_bucket = tx.create_bucket(os_name.encode())
                for package, advs in sorted(packages.items()):
                    pkg_bucket = os_bucket.create_bucket(package.encode())
                    for adv in advs:
                        fixed = json.dumps({"FixedVersion": adv.fixed_version}).encode()
                        pkg_bucket.put(adv.cve_id.encode(), fixed)
                        vulns.put(adv.cve_id.encode(), _vulnerability_json(adv, stamp))
    finally:
        db.close()
    _fix_meta_checksums(tmp_path)
    os.replace(tmp_path, db_path)

    metadata = {
        "gsv_demo": True,
        "Version": 2,
        "NextUpdate": (now + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "UpdatedAt": stamp,
        "DownloadedAt": stamp,
    }
    tmp_meta = db_dir / "metadata.json.tmp"
    tmp_meta.write_text(json.dumps(metadata))
    os.replace(tmp_meta, db_dir / "metadata.json")
    return db_path
