"""An OCI registry (Debian's `docker-registry`) on 127.0.0.1, and pushes with `skopeo`: open,
or behind htpasswd Basic auth, over HTTP or HTTPS with a self-signed certificate."""

import datetime
import hashlib
import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import bcrypt
import requests

from gsv_pipelines.lib.core.processes import ManagedProcess, ServiceError, free_port

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


@dataclass
class Registry:
    host: str  # 127.0.0.1:<port>
    process: ManagedProcess
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def push(
        self, layout_dir: Path, repository: str, tag: str, creds: tuple[str, str] | None = None
    ) -> None:
        """Copy the OCI layout's image into `repository:tag` on this registry (as `creds`)."""
        skopeo = shutil.which("skopeo")
        if not skopeo:
            raise ServiceError("skopeo is not installed (apt-get install skopeo)")
        subprocess.run(
            [
                skopeo,
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                *([f"--dest-creds={creds[0]}:{creds[1]}"] if creds else []),
                f"oci:{layout_dir}",
                f"docker://{self.host}/{repository}:{tag}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )

    def push_artifact(
        self,
        repository: str,
        tag: str,
        config_type: str,
        layers: list[tuple[str, bytes]],
        artifact_type: str | None = None,
        config: bytes = b"{}",
    ) -> str:
        """Push an OCI manifest with this config and these layers (media type, content) through
        the registry's API, as ORAS, cosign or Trivy's DB publisher do; its digest."""

        def blob(media_type: str, data: bytes) -> dict:
            digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
            started = requests.post(f"{self.url}/v2/{repository}/blobs/uploads/", timeout=5)
            started.raise_for_status()
            location = urljoin(self.url, started.headers["Location"])
            separator = "&" if "?" in location else "?"
            requests.put(
                f"{location}{separator}digest={digest}",
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=5,
            ).raise_for_status()
            return {"mediaType": media_type, "digest": digest, "size": len(data)}

        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **({"artifactType": artifact_type} if artifact_type else {}),
            "config": blob(config_type, config),
            "layers": [blob(media_type, data) for media_type, data in layers],
        }
        body = json.dumps(manifest).encode()
        requests.put(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            data=body,
            headers={"Content-Type": manifest["mediaType"]},
            timeout=5,
        ).raise_for_status()
        return f"sha256:{hashlib.sha256(body).hexdigest()}"

    def tags(self, repository: str) -> list[str]:
        response = requests.get(
            f"{self.url}/v2/{repository}/tags/list", timeout=5, verify=not self.tls
        )
        response.raise_for_status()
        return sorted(response.json()["tags"] or [])

    def digest(self, repository: str, tag: str) -> str:
        response = requests.head(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=5,
            verify=not self.tls,
        )
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]

    def stop(self) -> None:
        self.process.stop()


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry the registry accepts (bcrypt, the only scheme it reads)."""
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n"


def self_signed_certificate(root: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, and the key (PEM files in `root`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gsv-test-registry")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / "registry.crt", root / "registry.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def start_registry(
    root: Path, users: dict[str, str] | None = None, tls: bool = False, name: str = "registry"
) -> Registry:
    """A registry storing under `root`; `users` (name: password) turns on Basic auth, `tls`
    serves HTTPS with a self-signed certificate."""
    binary = shutil.which("docker-registry")
    if not binary:
        raise ServiceError("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = root / "config.yml"
    root.mkdir(parents=True, exist_ok=True)
    # Our own config: the packaged one listens on every interface and enables auth.
    text = (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if tls:
        cert_path, key_path = self_signed_certificate(root)
        text += f"  tls:\n    certificate: {cert_path}\n    key: {key_path}\n"
    if users:
        htpasswd = root / "htpasswd"
        htpasswd.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
        text += f"auth:\n  htpasswd:\n    realm: gsv-test\n    path: {htpasswd}\n"
    config.write_text(text)
    process = ManagedProcess(name, [binary, "serve", config], root / f"{name}.log").start()
    registry = Registry(host=f"127.0.0.1:{port}", process=process, tls=tls)
    expected = 401 if users else 200
    process.wait_ready(
        lambda: (
            requests.get(f"{registry.url}/v2/", timeout=1, verify=not tls).status_code == expected
        )
    )
    return registry
