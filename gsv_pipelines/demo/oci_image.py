"""Build a tiny, deterministic Alpine-like OCI image layout with the stdlib only: for the tests
and for the demo, which push it to a registry and scan it.

The image has a single layer holding just what Trivy needs to detect the OS
(``etc/os-release``, ``etc/alpine-release``) and the installed packages
(``lib/apk/db/installed``), plus any extra files (e.g. the planted fake secret below). No
network, no container runtime.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# Fixed timestamp (2024-01-01T00:00:00Z) so identical inputs give identical digests.
_EPOCH = 1704067200
_CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class ApkPackage:
    """An installed apk package: binary package name, version and source (origin) package."""

    name: str
    version: str
    origin: str

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.name, self.version, self.origin)


DEMO_PACKAGES: tuple[ApkPackage, ...] = (
    ApkPackage("libcrypto3", "3.1.4-r0", "openssl"),
    ApkPackage("busybox", "1.36.1-r15", "busybox"),
)
DEMO_PACKAGE_TUPLES: list[tuple[str, str, str]] = [p.as_tuple() for p in DEMO_PACKAGES]

# A FAKE GitHub personal access token, planted in demo and test images so that Trivy's secret
# scanner has something to find (rule `github-pat`, severity CRITICAL, so the shipped scan policy's
# no_embedded_secrets fails on it). It is not a credential: no account has it, and its last six
# characters are not the checksum real tokens carry. Assembled from parts so that a secret scanner
# run over this source tree does not report the source itself.
FAKE_GITHUB_TOKEN = "ghp" + "_" + "GsvDemoFakeTokenNotACredential" + "000000"
PLANTED_SECRET_PATH = "app/config/deploy-token.env"
PLANTED_SECRET_RULE = "github-pat"
PLANTED_SECRET_FILES: dict[str, str] = {
    PLANTED_SECRET_PATH: "# fake, planted by gsv for the scanning demo\n"
    f"GITHUB_TOKEN={FAKE_GITHUB_TOKEN}\n"
}


def _os_release(version: str) -> str:
    return (
        'NAME="Alpine Linux"\n'
        "ID=alpine\n"
        f"VERSION_ID={version}\n"
        f'PRETTY_NAME="Alpine Linux v{".".join(version.split(".")[:2])}"\n'
        'HOME_URL="https://alpinelinux.org/"\n'
        'BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"\n'
    )


def _apk_installed(packages: list[tuple[str, str, str]]) -> str:
    stanzas = [
        f"P:{name}\nV:{version}\nA:x86_64\no:{origin}\n" for name, version, origin in packages
    ]
    return "\n".join(stanzas) + "\n"


def _layer_tar(files: dict[str, str]) -> bytes:
    """Return an uncompressed tar with the parent directories and files, sorted and timeless."""
    dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in dirs:
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _EPOCH
            tar.addfile(info)
        for path in sorted(files):
            data = files[path].encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, _EPOCH
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_blob(blobs: Path, data: bytes) -> str:
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / hexdigest).write_bytes(data)
    return f"sha256:{hexdigest}"


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_alpine_image(
    layout_dir: Path,
    tag: str,
    packages: list[tuple[str, str, str]],
    *,
    alpine_version: str = "3.19.1",
    extra_files: dict[str, str] | None = None,
) -> str:
    """Write a one-layer Alpine OCI image layout into ``layout_dir`` and return its digest.

    ``packages`` are ``(name, version, origin)`` triples written to the apk database;
    ``extra_files`` maps relative paths (``app/config/x.env``) to the text added to the layer.
    ``index.json`` is (re)written to reference only this image, annotated with ``tag``.
    Output is byte-for-byte deterministic; the return value is the manifest digest
    (``sha256:<hex>``). Scan it with ``trivy image --input <layout_dir>``.
    """
    layout_dir = Path(layout_dir)
    blobs = layout_dir / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    files = {
        "etc/alpine-release": f"{alpine_version}\n",
        "etc/os-release": _os_release(alpine_version),
        "lib/apk/db/installed": _apk_installed(packages),
    }
    for path, text in (extra_files or {}).items():
        parts = path.split("/")
        if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"extra file {path!r}: give a relative path without . or .. parts")
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        if prefixes & set(files) or any(name.startswith(f"{path}/") for name in files):
            raise ValueError(f"extra file {path!r} collides with a file of the image")
        files[path] = text
    tar_bytes = _layer_tar(files)
    diff_id = f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"
    layer_gz = gzip.compress(tar_bytes, compresslevel=9, mtime=0)
    layer_digest = _write_blob(blobs, layer_gz)

    config = _json_bytes(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": _CREATED,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": _CREATED, "created_by": "gsv_pipelines.demo.oci_image"}],
        }
    )
    config_digest = _write_blob(blobs, config)

    manifest = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer_gz)}
            ],
        }
    )
    manifest_digest = _write_blob(blobs, manifest)

    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {REF_NAME: tag},
            }
        ],
    }
    (layout_dir / "oci-layout").write_bytes(_json_bytes({"imageLayoutVersion": "1.0.0"}))
    (layout_dir / "index.json").write_bytes(_json_bytes(index))
    return manifest_digest
