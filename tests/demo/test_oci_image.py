"""The demo/test image builder, and the fake secret it plants, against the real trivy."""

import gzip
import json
import shutil

import pytest

from gsv_pipelines.demo.oci_image import (
    DEMO_PACKAGE_TUPLES,
    FAKE_GITHUB_TOKEN,
    PLANTED_SECRET_FILES,
    PLANTED_SECRET_PATH,
    PLANTED_SECRET_RULE,
    build_alpine_image,
)
from gsv_pipelines.lib.core.store import ArtefactStore
from gsv_pipelines.lib.scanning import store as scan_store
from gsv_pipelines.lib.scanning.trivy import Trivy
from gsv_pipelines.lib.scanning.trivy_report import parse_report


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_same_inputs_give_the_same_bytes_and_digest(tmp_path):
    one = build_alpine_image(tmp_path / "a", "1.0", DEMO_PACKAGE_TUPLES, extra_files={"x/y": "z"})
    two = build_alpine_image(tmp_path / "b", "1.0", DEMO_PACKAGE_TUPLES, extra_files={"x/y": "z"})
    assert one == two
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [one]


def test_extra_files_change_the_digest(tmp_path):
    plain = build_alpine_image(tmp_path / "a", "1.0", DEMO_PACKAGE_TUPLES)
    planted = build_alpine_image(
        tmp_path / "b", "1.0", DEMO_PACKAGE_TUPLES, extra_files=PLANTED_SECRET_FILES
    )
    assert plain != planted


@pytest.mark.parametrize("path", ["/etc/passwd", "app/../etc/x", "etc/os-release", "etc"])
def test_an_extra_file_may_not_escape_or_replace_the_image_s_own(tmp_path, path):
    with pytest.raises(ValueError, match="extra file"):
        build_alpine_image(tmp_path, "1.0", DEMO_PACKAGE_TUPLES, extra_files={path: "x"})


def test_real_trivy_finds_the_planted_secret_and_the_store_never_holds_it(
    trivy_bin, trivy_cache, tmp_path
):
    cache = tmp_path / "cache"
    shutil.copytree(trivy_cache, cache)
    layout = tmp_path / "layout"
    digest = build_alpine_image(
        layout, "1.0", DEMO_PACKAGE_TUPLES, extra_files=PLANTED_SECRET_FILES
    )
    trivy = Trivy(binary=trivy_bin, cache_dir=cache)
    run = trivy.scan_image(str(layout), layout=True)
    report = parse_report(run.report)

    [secret] = report.secrets.to_dict("records")
    assert secret["rule_id"] == PLANTED_SECRET_RULE
    assert secret["severity"] == "CRITICAL"
    assert secret["target"] == "/" + PLANTED_SECRET_PATH

    store = ArtefactStore(str(tmp_path / "store"))
    record = scan_store.write_scan(
        store,
        digest=digest,
        reference=f"oci:{layout}",
        raw_report=run.report,
        report=report,
        db_metadata=trivy.db_metadata(),
        policy_sha256="0" * 64,
        duration_seconds=run.seconds,
    )
    # Trivy masks the token in Match and Code; its distinctive middle must be nowhere either.
    needles = [FAKE_GITHUB_TOKEN.encode(), FAKE_GITHUB_TOKEN[4:24].encode()]
    written = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"report.json.gz", "secrets.parquet", "latest.json"}
    for path in written:
        data = path.read_bytes()
        texts = [data, gzip.decompress(data)] if path.suffix == ".gz" else [data]
        for text in texts:
            assert not any(needle in text for needle in needles), path
    for name in scan_store.FRAMES:  # parquet may compress, so read the frames back too
        frame = scan_store.read_frame(store, record, name).to_csv()
        assert FAKE_GITHUB_TOKEN[4:24] not in frame
