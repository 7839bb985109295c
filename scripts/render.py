"""Render what a cluster gets, into one folder: the Kustomization of deploy/k8s (and of
rotation-consumers/) as plain manifests, with the image pinned by digest and the NetworkPolicies'
outside addresses set, beside the Helm values for Dagster's chart. `make render`, `make deploy-qa`
and `make deploy-prod` call it (docs/kubernetes.md); nothing here talks to a cluster.

    python scripts/render.py --env prod --out build/deploy/prod \
        [--image REPO@sha256:DIGEST] [--egress-cidr kubernetes-api=10.0.0.1/32 ...] \
        [--stage qa|prod]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = "dagster/dagster"
CHART_VERSION = "1.13.27"
PLACEHOLDER = "registry.example.com/platform/gsv-pipelines"
IMAGE = re.compile(r"[a-z0-9][a-z0-9.\-/:]*@sha256:[0-9a-f]{64}")
# A dev cluster runs the image `kind load` put on its node, which has a tag but no registry digest.
DEV_IMAGE = re.compile(r"[a-z0-9][a-z0-9.\-/]*:[A-Za-z0-9_.\-]+")
# Kinds a dev cluster (kind) does not serve unless their operators are installed: dropped there.
OPERATOR_KINDS = {"ExternalSecret", "ClusterSecretStore", "PrometheusRule", "ServiceMonitor"}
GITOPS_PATH = "clusters/{stage}/gsv-pipelines"


class RenderError(Exception):
    """The render was asked for something it must refuse; nothing was written."""


def kustomize(folder: Path, image: str | None) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise RenderError("kubectl is not on PATH: its `kubectl kustomize` renders deploy/k8s")
    with tempfile.TemporaryDirectory() as tmp:
        # All of deploy/, so that what the Kustomization names beside it (../prometheus) is there.
        copy = Path(tmp) / folder.relative_to(DEPLOY.parent)
        shutil.copytree(DEPLOY, Path(tmp) / DEPLOY.name)
        if image:
            # What `kustomize edit set image` writes; kustomization.yaml's replacements then copy
            # it into DAGSTER_CURRENT_IMAGE.
            if "@" in image:
                name, digest = image.split("@")
                pin = {"newName": name, "digest": digest}
            else:
                name, tag = image.rsplit(":", 1)
                pin = {"newName": name, "newTag": tag}
            kustomization = copy / "kustomization.yaml"
            spec = yaml.safe_load(kustomization.read_text())
            spec["images"] = [{"name": PLACEHOLDER, **pin}]
            kustomization.write_text(yaml.safe_dump(spec, sort_keys=False))
        done = subprocess.run(
            [kubectl, "kustomize", str(copy)], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {folder}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def set_egress(docs: list[dict], cidrs: dict[str, list[str]]) -> None:
    """Put each outside system's addresses into the NetworkPolicy that opens it (`gsv/egress-to`):
    several for a system whose host name resolves to several (a webhook service's, say)."""
    found = set()
    for doc in docs:
        system = doc.get("metadata", {}).get("annotations", {}).get("gsv/egress-to")
        if doc["kind"] != "NetworkPolicy" or system not in cidrs:
            continue
        found.add(system)
        for rule in doc["spec"]["egress"]:
            blocks = [peer for peer in rule["to"] if "ipBlock" in peer]
            if not blocks:
                raise RenderError(f"{system} is reached in-cluster, not by address")
            rule["to"] = [{"ipBlock": {"cidr": cidr}} for cidr in cidrs[system]]
    if missing := set(cidrs) - found:
        raise RenderError(f"no NetworkPolicy opens {sorted(missing)}")


def _cidrs(pairs: list[str]) -> dict[str, list[str]]:
    cidrs: dict[str, list[str]] = {}
    for pair in pairs:
        system, _, cidr = pair.partition("=")
        if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", cidr):
            raise RenderError(f"--egress-cidr {pair!r}: expected SYSTEM=A.B.C.D/N")
        cidrs.setdefault(system, []).append(cidr)
    return cidrs


def render(
    env: str, out: Path, image: str | None, cidrs: dict[str, list[str]], stage: str | None
) -> list[str]:
    """Write the set into `out` (replacing what was there); the files written."""
    if image and not (IMAGE.fullmatch(image) or (env == "dev" and DEV_IMAGE.fullmatch(image))):
        raise RenderError(f"--image {image!r}: expected REPOSITORY@sha256:<64 hex digits>")
    if stage and not image:
        raise RenderError(
            f"promoting to {stage} needs the image digest that was built and scanned: IMAGE=..."
        )
    values = [DEPLOY / "helm" / "values.yaml", DEPLOY / "helm" / f"values-{env}.yaml"]
    if not values[1].is_file():
        raise RenderError(f"no values for environment {env!r} ({values[1].name})")
    if stage == "prod":
        qa = out.parent / "qa" / "IMAGE"
        if not qa.is_file() or qa.read_text().strip() != image:
            raise RenderError(
                f"prod gets only the image QA ran: render QA first (make deploy-qa IMAGE={image}),"
                f" or promote the digest in {qa}"
            )
    manifests = kustomize(DEPLOY / "k8s", image)
    if env == "dev":
        manifests = [d for d in manifests if d["kind"] not in OPERATOR_KINDS]
    set_egress(manifests, cidrs)
    consumers = kustomize(DEPLOY / "k8s" / "rotation-consumers", None)

    shutil.rmtree(out, ignore_errors=True)
    (out / "helm").mkdir(parents=True)
    (out / "manifests.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    (out / "rotation-consumers.yaml").write_text(yaml.safe_dump_all(consumers, sort_keys=False))
    for path in values:
        shutil.copyfile(path, out / "helm" / path.name)
    (out / "helm" / "chart.yaml").write_text(
        yaml.safe_dump(
            {
                "chart": CHART,
                "version": CHART_VERSION,
                "release": "dagster",
                "namespace": "dagster",
                "valueFiles": [f"helm/{p.name}" for p in values],
            },
            sort_keys=False,
        )
    )
    if image:
        (out / "IMAGE").write_text(image + "\n")
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def promotion_steps(stage: str, out: Path, image: str) -> str:
    path = GITOPS_PATH.format(stage=stage)
    after = (
        f"Then, once QA is green, promote the same digest:\n  make deploy-prod IMAGE={image}\n"
        if stage == "qa"
        else "Prod now runs the digest QA ran.\n"
    )
    return (
        f"Rendered {stage} into {out}. To promote:\n"
        f"  1. Copy {out}/ to the GitOps repository at {path}/ and open a merge request;\n"
        f"     the diff is everything that changes in {stage}.\n"
        "  2. After review, merge: Argo CD or Flux applies manifests.yaml and\n"
        f"     rotation-consumers.yaml, and installs {CHART} {CHART_VERSION} as release `dagster`\n"
        "     in namespace `dagster` with the value files in helm/ (helm/chart.yaml).\n"
        "  3. Check: kubectl -n dagster rollout status deployment/gsv-pipelines; in the UI the\n"
        "     code location gsv_pipelines loads and scanning/config_scan passes.\n"
        f"{after}"
    )


DEV_STEPS = """\
A kind cluster on a machine with Docker (docs/kubernetes.md, "Development on kind"):
  kind create cluster --name gsv
  docker build -f deploy/docker/Dockerfile -t gsv-pipelines:dev .
  kind load docker-image gsv-pipelines:dev --name gsv
  make deploy-dev IMAGE=gsv-pipelines:dev EGRESS=kubernetes-api=<API server address>/32
  # then CloudNativePG with its `dagster-db` cluster and the two Secrets (docs/kubernetes.md), and
  kubectl apply -f {out}/manifests.yaml
  helm upgrade --install dagster dagster/dagster --version 1.13.27 -n dagster \\
    -f {out}/helm/values.yaml -f {out}/helm/values-dev.yaml
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="prod", help="values-<env>.yaml on top of values.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image", default=None, help="REPOSITORY@sha256:DIGEST")
    parser.add_argument(
        "--egress-cidr",
        action="append",
        default=[],
        metavar="SYSTEM=CIDR",
        help="an outside system's address; repeat a SYSTEM for several",
    )
    parser.add_argument("--stage", choices=("qa", "prod"), default=None)
    args = parser.parse_args(argv)
    try:
        written = render(
            args.env, args.out, args.image or None, _cidrs(args.egress_cidr), args.stage
        )
    except RenderError as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    print(f"render: wrote {', '.join(written)} to {args.out}")
    if args.stage:
        print(promotion_steps(args.stage, args.out, args.image))
    elif args.env == "dev":
        print(DEV_STEPS.format(out=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
