"""scanning/config_scan: the real trivy binary over the project's own deploy/ folder, and over
copies of it with a hardening undone."""

import shutil
from pathlib import Path

import dagster as dg

from gsv_pipelines.defs.scanning.assets import CONFIG_SCAN_CHECK, ConfigScanConfig, config_scan
from gsv_pipelines.resources.trivy import TrivyResource

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
NODE = "scanning__config_scan"


def _materialize(trivy_bin: str, cache: Path, folder: Path | None = None):
    run_config = dg.RunConfig(ops={NODE: ConfigScanConfig(folder=str(folder))}) if folder else None
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [config_scan],
            instance=instance,
            resources={"trivy": TrivyResource(binary=trivy_bin, cache_dir=str(cache))},
            run_config=run_config,
            raise_on_error=False,
        )


def _text(metadata: dict, key: str) -> str:
    return str(metadata[key].value)


def test_the_project_s_deploy_folder_has_no_severe_misconfiguration(trivy_bin, tmp_path):
    result = _materialize(trivy_bin, tmp_path / "cache")
    assert result.success
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["folder"].value == str(DEPLOY)
    assert (metadata["failures_critical"].value, metadata["failures_high"].value) == (0, 0)
    # The Dockerfile and every manifest of deploy/k8s (kustomization.yaml is not a resource).
    manifests = [p for p in (DEPLOY / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml"]
    assert metadata["files_scanned"].value >= len(manifests) + 1
    assert metadata["duration_seconds"].value > 0
    # The executor's Job creation is a MEDIUM finding that RBAC cannot avoid; it is listed.
    assert metadata["failures_medium"].value >= 1
    assert "| KSV048 | MEDIUM | k8s/rbac-step-jobs.yaml:" in _text(metadata, "failures")

    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == CONFIG_SCAN_CHECK
    assert evaluation.passed
    assert evaluation.metadata["severe_failures"].value == 0


def test_a_privileged_container_and_a_root_image_fail_the_check_by_name(trivy_bin, tmp_path):
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    manifest = deploy / "k8s" / "deployment.yaml"
    hardened = manifest.read_text()
    assert hardened.count("            privileged: false\n") == 1
    manifest.write_text(hardened.replace("privileged: false\n", "privileged: true\n", 1))
    dockerfile = deploy / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("USER 10001:10001", "USER root"))

    result = _materialize(trivy_bin, tmp_path / "cache", deploy)

    # Blocking: the run fails, after recording what it found.
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert CONFIG_SCAN_CHECK in failure.step_failure_data.error.to_string()
    metadata = result.asset_materializations_for_node(NODE)[0].metadata
    assert metadata["failures_high"].value == 2
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["severe_failures"].value == 2
    table = _text(evaluation.metadata, "failures")
    assert "| KSV017 | HIGH | k8s/deployment.yaml:" in table
    assert "| DS002 | HIGH | docker/Dockerfile" in table
    assert "KSV048" not in table  # only HIGH and CRITICAL fail the check
    assert "KSV017 (HIGH) in k8s/deployment.yaml" in evaluation.description
    assert "DS002 (HIGH) in docker/Dockerfile" in evaluation.description


def test_a_missing_folder_is_a_clear_error(trivy_bin, tmp_path):
    missing = tmp_path / "no-such-deploy"
    result = _materialize(trivy_bin, tmp_path / "cache", missing)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert f"no folder to scan at {missing}" in failure.step_failure_data.error.to_string()
    assert result.get_asset_check_evaluations() == []
