"""scripts/render.py (make render, deploy-qa, deploy-prod, deploy-dev): the full set in one
folder, the image pinned by digest everywhere runs start from, the outside addresses set, and the
promotion rules (a digest, and in prod only QA's)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy import schemas

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "render.py"
IMAGE = "registry.example.com/platform/gsv-pipelines@sha256:" + "ab" * 32


def _render(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _container(docs: list[dict], deployment: str = "gsv-pipelines") -> dict:
    [found] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment]
    [container] = found["spec"]["template"]["spec"]["containers"]
    return container


def test_render_writes_the_full_set_with_the_image_and_addresses(tmp_path):
    out = tmp_path / "prod"
    done = _render(
        out, "--image", IMAGE, "--egress-cidr", "kubernetes-api=10.1.2.3/32",
        "--egress-cidr", "object-store=10.9.0.0/24",
        "--egress-cidr", "slack=10.20.0.1/32", "--egress-cidr", "slack=10.20.0.2/32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "IMAGE",
        "helm/chart.yaml",
        "helm/values-prod.yaml",
        "helm/values.yaml",
        "manifests.yaml",
        "rotation-consumers.yaml",
    ]
    manifests = _docs(out / "manifests.yaml")
    listed = schemas.listed_manifests(ROOT / "deploy" / "k8s")
    written = [d for p in listed for d in schemas.load_yaml(p)]
    assert {(d["kind"], d["metadata"]["name"]) for d in manifests} == {
        (d["kind"], d["metadata"]["name"]) for d in written
    }
    # The alerts domain's objects among them: the exporter, its Service, the monitor, the rules.
    assert {
        ("Deployment", "gsv-pipelines-metrics"),
        ("Service", "gsv-pipelines-metrics"),
        ("ServiceMonitor", "gsv-pipelines"),
        ("PrometheusRule", "gsv-pipelines"),
    } <= {(d["kind"], d["metadata"]["name"]) for d in manifests}
    for doc in manifests + _docs(out / "rotation-consumers.yaml"):
        schemas.validate(doc)
    container = _container(manifests)
    env = {e["name"]: e for e in container["env"]}
    assert container["image"] == env["DAGSTER_CURRENT_IMAGE"]["value"] == IMAGE
    assert _container(manifests, "gsv-pipelines-metrics")["image"] == IMAGE
    policies = {d["metadata"]["name"]: d["spec"] for d in manifests if d["kind"] == "NetworkPolicy"}
    assert policies["egress-kubernetes-api"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "10.1.2.3/32"}}
    ]
    assert policies["egress-object-store"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "10.9.0.0/24"}}
    ]
    # A system given twice gets both addresses; one not given keeps the shipped one.
    assert policies["egress-slack"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "10.20.0.1/32"}},
        {"ipBlock": {"cidr": "10.20.0.2/32"}},
    ]
    assert policies["egress-teams"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "192.0.2.21/32"}}]
    for name in ("values.yaml", "values-prod.yaml"):
        assert (out / "helm" / name).read_bytes() == (ROOT / "deploy" / "helm" / name).read_bytes()
    chart = yaml.safe_load((out / "helm" / "chart.yaml").read_text())
    assert chart["chart"] == "dagster/dagster" and chart["version"] == "1.13.27"
    assert (out / "IMAGE").read_text().strip() == IMAGE


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "registry.example.com/gsv-pipelines:latest"], "sha256"),
        (["--egress-cidr", "qdrant=10.0.0.1/32"], "in-cluster"),
        (["--egress-cidr", "pagerduty=10.0.0.1/32"], "no NetworkPolicy opens ['pagerduty']"),
        (["--egress-cidr", "registry=everywhere"], "SYSTEM=A.B.C.D/N"),
        (["--stage", "qa"], "image digest"),
        (["--env", "staging"], "values-staging.yaml"),
    ],
)
def test_render_refuses_what_it_cannot_render_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    done = _render(out, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not out.exists()


def test_prod_gets_only_the_digest_qa_ran(tmp_path):
    other = IMAGE.replace("ab" * 32, "cd" * 32)
    refused = _render(tmp_path / "prod", "--stage", "prod", "--image", IMAGE)
    assert refused.returncode == 2 and "render QA first" in refused.stderr
    qa = _render(tmp_path / "qa", "--stage", "qa", "--image", IMAGE)
    assert qa.returncode == 0, qa.stderr
    assert (
        "clusters/qa/gsv-pipelines" in qa.stdout and f"make deploy-prod IMAGE={IMAGE}" in qa.stdout
    )
    assert _render(tmp_path / "prod", "--stage", "prod", "--image", other).returncode == 2
    prod = _render(tmp_path / "prod", "--stage", "prod", "--image", IMAGE)
    assert prod.returncode == 0, prod.stderr
    assert "clusters/prod/gsv-pipelines" in prod.stdout


def test_dev_renders_without_the_operators_kinds_and_runs_the_loaded_image(tmp_path):
    out = tmp_path / "dev"
    done = _render(out, "--env", "dev", "--image", "gsv-pipelines:dev")
    assert done.returncode == 0, done.stderr
    assert "kind create cluster" in done.stdout
    manifests = _docs(out / "manifests.yaml")
    assert not {d["kind"] for d in manifests} & {
        "ExternalSecret",
        "ClusterSecretStore",
        "PrometheusRule",
        "ServiceMonitor",
    }
    assert _container(manifests)["image"] == "gsv-pipelines:dev"
    assert _container(manifests, "gsv-pipelines-metrics")["image"] == "gsv-pipelines:dev"
    assert (out / "helm" / "values-dev.yaml").is_file()
