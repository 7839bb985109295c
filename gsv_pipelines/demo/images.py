"""The scanning demo's two images, built as OCI layouts (no registry, no container runtime),
and the deployed-images inventory that says they run.

`agents/agent-runtime` carries the packages the demo vulnerability DB knows to be vulnerable
(demo/trivy_db.py: CVE-2099-0001 critical and fixable, -0002 high, -0003 medium) and a planted
FAKE token (demo/oci_image.py: not a credential); `platform/web-gateway` carries the fixed
versions, so its scan is clean.
"""

from pathlib import Path

import yaml

from gsv_pipelines.demo.oci_image import (
    DEMO_PACKAGE_TUPLES,
    PLANTED_SECRET_FILES,
    build_alpine_image,
)

FIXED_PACKAGES = [
    ("libcrypto3", "3.1.4-r5", "openssl"),
    ("busybox", "1.36.1-r16", "busybox"),
]

DEMO_IMAGES = (
    # (namespace, workload, packages, extra files)
    ("agents", "agent-runtime", DEMO_PACKAGE_TUPLES, PLANTED_SECRET_FILES),
    ("platform", "web-gateway", FIXED_PACKAGES, {}),
)


def seed_images(images_dir: Path, inventory: Path) -> dict[str, dict[str, str]]:
    """Build both layouts under `images_dir` and write `inventory` listing them as deployed."""
    built, entries = {}, []
    for namespace, workload, packages, extra in DEMO_IMAGES:
        layout = images_dir / workload
        digest = build_alpine_image(layout, "demo", list(packages), extra_files=dict(extra))
        image = f"oci:{layout}@{digest}"
        built[f"{namespace}/{workload}"] = {"digest": digest, "image": image}
        entries.append({"namespace": namespace, "workload": workload, "image": image})
    inventory.parent.mkdir(parents=True, exist_ok=True)
    inventory.write_text(
        "# Written by `gsv seed`: the demo's deployed images (OCI layouts, no cluster).\n"
        + yaml.safe_dump(entries, sort_keys=False)
    )
    return built
