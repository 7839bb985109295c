"""Each real service of the harness, exercised once for real."""

import json
import subprocess

import fsspec
import hvac
from qdrant_client import models

from gsv_pipelines.demo.trivy_db import DEMO_ADVISORIES
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.vault import VaultResource


def test_postgres_sql_round_trip(postgres):
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("create table round_trip (id int primary key, note text)")
        cur.execute("insert into round_trip values (1, 'hello'), (2, 'world')")
        cur.execute("select note from round_trip order by id")
        assert [row[0] for row in cur.fetchall()] == ["hello", "world"]
        cur.execute("show server_version_num")
        assert cur.fetchone()[0].startswith("15")


def test_openbao_kv_write_and_read(openbao):
    client = VaultResource(addr=openbao.addr, token=openbao.token).client()
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(
        path="tests/round-trip", secret={"value": "v1"}, mount_point="secret"
    )
    kv.create_or_update_secret(path="tests/round-trip", secret={"value": "v2"}, cas=1)
    current = kv.read_secret_version(path="tests/round-trip", raise_on_deleted_version=True)
    assert current["data"]["data"] == {"value": "v2"}
    assert current["data"]["metadata"]["version"] == 2
    # check-and-set refuses a write based on a stale version
    try:
        kv.create_or_update_secret(path="tests/round-trip", secret={"value": "v3"}, cas=1)
    except hvac.exceptions.InvalidRequest:
        pass
    else:
        raise AssertionError("a stale check-and-set write was accepted")


def test_registry_push_and_tag_listing(registry, alpine_image):
    repo = alpine_image["repository"]
    assert alpine_image["tag"] in registry.tags(repo)
    assert registry.digest(repo, alpine_image["tag"]) == alpine_image["digest"]


def test_trivy_scan_of_pushed_image_finds_generated_cves(
    trivy_bin, trivy_cache, registry, alpine_image
):
    ref = f"{registry.host}/{alpine_image['repository']}@{alpine_image['digest']}"
    result = subprocess.run(
        [
            trivy_bin,
            "image",
            "--cache-dir", str(trivy_cache),
            "--skip-db-update",
            "--offline-scan",
            "--scanners", "vuln",
            "--image-src", "remote",
            "--insecure",
            "--format", "json",
            "--quiet",
            ref,
        ],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    report = json.loads(result.stdout)
    found = {
        (v["VulnerabilityID"], v["PkgName"], v["FixedVersion"], v["Severity"])
        for r in report["Results"]
        for v in r.get("Vulnerabilities") or []
    }
    expected_packages = {"openssl": "libcrypto3", "busybox": "busybox"}
    assert found == {
        (a.cve_id, expected_packages[a.package], a.fixed_version, a.severity)
        for a in DEMO_ADVISORIES
    }
    assert report["Metadata"]["OS"]["Family"] == "alpine"


def test_s3_put_and_get(s3):
    fs = fsspec.filesystem("s3", **s3.storage_options())
    fs.mkdir("gsv-test-bucket")
    fs.pipe("gsv-test-bucket/backups/hello.txt", b"backed up")
    assert fs.cat("gsv-test-bucket/backups/hello.txt") == b"backed up"
    assert fs.ls("gsv-test-bucket/backups") == ["gsv-test-bucket/backups/hello.txt"]


def test_embedded_qdrant_round_trip(tmp_path):
    client = QdrantResource(path=str(tmp_path / "qdrant")).client()
    try:
        client.create_collection(
            "memory", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
        )
        client.upsert(
            "memory",
            points=[
                models.PointStruct(id=i, vector=[i, 1, 0, 0], payload={"i": i}) for i in range(5)
            ],
        )
        assert client.count("memory", exact=True).count == 5
        best = client.query_points("memory", query=[1, 0, 0, 0], limit=1).points[0]
        assert best.id == 4
    finally:
        client.close()
