"""Which manifests in a registry are container images, and what the others are. No Dagster here.

A repository holds more than images: OCI artifacts (OCI 1.1 `artifactType`, or a config of
another media type: a Trivy DB, a Helm chart, an SBOM) and cosign's signatures and attestations
(image manifests whose layers are signatures or DSSE envelopes, under tags `sha256-<hex>.sig` /
`.att`). Trivy "scans" those as images that contain nothing, so they would pass as clean images.
"""

from collections.abc import Mapping
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
IMAGE_CONFIGS = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
IMAGE_LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")

# What a media type says an artifact is; another one is named by its media type.
KINDS = {
    "application/vnd.aquasec.trivy.config.v1+json": "Trivy DB",
    "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip": "Trivy DB",
    "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip": "Trivy DB",
    "application/vnd.dev.cosign.simplesigning.v1+json": "cosign signature",
    "application/vnd.dev.cosign.artifact.sig.v1+json": "cosign signature",
    "application/vnd.dev.sigstore.bundle.v0.3+json": "sigstore bundle",
    "application/vnd.dsse.envelope.v1+json": "attestation",
    "application/vnd.in-toto+json": "attestation",
    "application/spdx+json": "SBOM",
    "text/spdx": "SBOM",
    "application/vnd.cyclonedx+json": "SBOM",
    "application/vnd.cyclonedx+xml": "SBOM",
    "application/vnd.syft+json": "SBOM",
    "application/vnd.cncf.helm.config.v1+json": "Helm chart",
}


def _kind(media_type: str | None) -> str:
    if not media_type:
        return "artifact (no media type)"
    return KINDS.get(media_type) or f"artifact ({media_type})"


def artifact_kind(manifest: Mapping[str, Any], content_type: str = "") -> str | None:
    """None for an image (a single-platform manifest or a multi-platform index); else what the
    manifest holds instead, e.g. "Trivy DB", "cosign signature", "SBOM". `content_type`: the
    registry's Content-Type, for manifests that leave out their own mediaType."""
    media_type = manifest.get("mediaType") or content_type.split(";")[0].strip()
    artifact_type = manifest.get("artifactType")
    if artifact_type:
        return _kind(artifact_type)
    if media_type in (OCI_INDEX, DOCKER_LIST):
        return None
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        return f"not an image manifest ({media_type or 'no media type'})"
    config = (manifest.get("config") or {}).get("mediaType")
    if config not in IMAGE_CONFIGS:
        return _kind(config)
    for layer in manifest.get("layers") or []:
        layer_type = layer.get("mediaType") or ""
        if not layer_type.startswith(IMAGE_LAYER_PREFIXES):
            return _kind(layer_type)
    return None
