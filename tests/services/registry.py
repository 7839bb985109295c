"""An OCI registry (Debian's `docker-registry`) on 127.0.0.1, and pushes with `skopeo`."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from gsv_pipelines.lib.processes import ManagedProcess, ServiceError, free_port

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

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push(self, layout_dir: Path, repository: str, tag: str) -> None:
        """Copy the OCI layout's image into `repository:tag` on this registry."""
        skopeo = shutil.which("skopeo")
        if not skopeo:
            raise ServiceError("skopeo is not installed (apt-get install skopeo)")
        subprocess.run(
            [
                skopeo,
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                f"oci:{layout_dir}",
                f"docker://{self.host}/{repository}:{tag}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )

    def tags(self, repository: str) -> list[str]:
        response = requests.get(f"{self.url}/v2/{repository}/tags/list", timeout=5)
        response.raise_for_status()
        return sorted(response.json()["tags"] or [])

    def digest(self, repository: str, tag: str) -> str:
        response = requests.head(
            f"{self.url}/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=5,
        )
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]

    def stop(self) -> None:
        self.process.stop()


def start_registry(root: Path) -> Registry:
    binary = shutil.which("docker-registry")
    if not binary:
        raise ServiceError("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = root / "config.yml"
    root.mkdir(parents=True, exist_ok=True)
    # Our own config: the packaged one listens on every interface and enables auth.
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = ManagedProcess("registry", [binary, "serve", config], root / "registry.log").start()
    registry = Registry(host=f"127.0.0.1:{port}", process=process)
    process.wait_ready(lambda: requests.get(f"{registry.url}/v2/", timeout=1).ok)
    return registry
