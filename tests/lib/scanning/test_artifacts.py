import pytest

from gsv_pipelines.lib.scanning.artifacts import artifact_kind

OCI = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _manifest(config: str, *layers: str, artifact_type: str | None = None, media=OCI) -> dict:
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": config},
        "layers": [{"mediaType": t} for t in layers],
    }
    if media:
        manifest["mediaType"] = media
    if artifact_type:
        manifest["artifactType"] = artifact_type
    return manifest


@pytest.mark.parametrize(
    ("manifest", "content_type", "kind"),
    [
        (_manifest(IMAGE_CONFIG, LAYER), "", None),
        # OCI manifests may leave their mediaType to the registry's Content-Type.
        (_manifest(IMAGE_CONFIG, LAYER, media=None), OCI, None),
        (
            _manifest(
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                media="application/vnd.docker.distribution.manifest.v2+json",
            ),
            "",
            None,
        ),
        ({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}, "", None),
        (
            _manifest(
                "application/vnd.aquasec.trivy.config.v1+json",
                "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip",
            ),
            "",
            "Trivy DB",
        ),
        (
            _manifest(IMAGE_CONFIG, "application/vnd.dev.cosign.simplesigning.v1+json"),
            "",
            "cosign signature",
        ),
        (_manifest(IMAGE_CONFIG, "application/vnd.dsse.envelope.v1+json"), "", "attestation"),
        (
            _manifest(
                "application/vnd.oci.empty.v1+json",
                "application/spdx+json",
                artifact_type="application/spdx+json",
            ),
            "",
            "SBOM",
        ),
        (
            _manifest("application/vnd.cncf.helm.config.v1+json", "application/x-tar"),
            "",
            "Helm chart",
        ),
        (
            _manifest("application/vnd.example.thing+json"),
            "",
            "artifact (application/vnd.example.thing+json)",
        ),
    ],
)
def test_images_are_told_from_other_artifacts_by_their_media_types(manifest, content_type, kind):
    assert artifact_kind(manifest, content_type) == kind
