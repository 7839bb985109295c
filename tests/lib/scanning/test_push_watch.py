"""The push watch against the real registry: what is new, what the cursor keeps on errors."""

import time
import uuid

import pytest
import requests

from gsv_pipelines.demo.oci_image import build_alpine_image
from gsv_pipelines.lib.scanning.push_watch import dump_cursor, load_cursor, watch
from gsv_pipelines.lib.scanning.registries import RegistriesError, RegistryConfig
from gsv_pipelines.lib.scanning.registry_client import MANIFEST_ACCEPT, RegistryClient
from tests.services.flaky_proxy import FlakyProxy


def push_variant(registry, tmp_path, repository: str, tag: str, variant: str) -> str:
    layout = tmp_path / f"layout-{variant}"
    digest = build_alpine_image(layout, tag, [("gsv-probe", f"{variant}-r0", "gsv-probe")])
    registry.push(layout, repository, tag)
    return digest


def retag(url: str, repository: str, tag: str, new_tag: str) -> None:
    manifest = requests.get(
        f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=5
    )
    manifest.raise_for_status()
    requests.put(
        f"{url}/v2/{repository}/manifests/{new_tag}",
        data=manifest.content,
        headers={"Content-Type": manifest.headers["Content-Type"]},
        timeout=5,
    ).raise_for_status()


def client_for(config: RegistryConfig) -> RegistryClient:
    return RegistryClient(config, timeout=(2.0, 1.0))


@pytest.fixture
def prefix() -> str:
    """A repository prefix of this test's own: the session registry is shared."""
    return f"watch-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def proxy(registry):
    flaky = FlakyProxy(registry.url).start()
    yield flaky
    flaky.stop()


def test_first_look_reports_each_digest_once_with_a_pullable_reference(registry, tmp_path, prefix):
    shared = push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "p1")
    push_variant(registry, tmp_path, f"{prefix}/worker", "1.0", "p1")  # same bytes elsewhere
    retag(registry.url, f"{prefix}/api", "1.0", "stable")
    own = push_variant(registry, tmp_path, f"{prefix}/worker", "2.0", "p2")
    config = RegistryConfig(name="local", url=registry.url, repositories=(f"{prefix}/*",))

    result = watch([config], {}, client_for)

    assert result.errors == [] and result.failed_registries == []
    assert [(i.digest, i.reference) for i in result.new_images] == [
        (shared, f"{registry.host}/{prefix}/api@{shared}"),
        (own, f"{registry.host}/{prefix}/worker@{own}"),
    ]
    assert result.cursor == {
        "local": {
            f"{prefix}/api": {"1.0": shared, "stable": shared},
            f"{prefix}/worker": {"1.0": shared, "2.0": own},
        }
    }
    assert (result.repositories, result.tags) == (2, 4)
    assert load_cursor(dump_cursor(result.cursor)) == result.cursor


def test_retags_and_copies_are_not_new_a_new_push_is(registry, tmp_path, prefix):
    old = push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "q1")
    config = RegistryConfig(name="local", url=registry.url, repositories=(f"{prefix}/*",))
    first = watch([config], {}, client_for)

    retag(registry.url, f"{prefix}/api", "1.0", "latest")
    push_variant(registry, tmp_path, f"{prefix}/copy", "1.0", "q1")
    new = push_variant(registry, tmp_path, f"{prefix}/api", "1.1", "q2")
    second = watch([config], first.cursor, client_for)

    assert [i.digest for i in first.new_images] == [old]
    assert [i.digest for i in second.new_images] == [new]
    assert second.cursor["local"][f"{prefix}/api"] == {"1.0": old, "1.1": new, "latest": old}


def test_a_digest_seen_in_another_registry_is_not_new(registry, tmp_path, prefix):
    digest = push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "r1")
    previous = {"mirror": {"library/api": {"1.0": digest}}}
    config = RegistryConfig(name="local", url=registry.url, repositories=(f"{prefix}/api",))

    result = watch([config], previous, client_for)

    assert result.new_images == []
    assert result.cursor == {"local": {f"{prefix}/api": {"1.0": digest}}}  # mirror unconfigured


def test_literal_patterns_never_call_the_catalog(registry, tmp_path, prefix, proxy):
    digest = push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "s1")
    literal = RegistryConfig(
        name="local", url=proxy.url, repositories=(f"{prefix}/api", f"{prefix}/not-pushed")
    )
    globbed = RegistryConfig(name="local", url=proxy.url, repositories=(f"{prefix}/a?i",))

    literal_result = watch([literal], {}, client_for)
    assert proxy.requests_to("_catalog") == 0
    globbed_result = watch([globbed], {}, client_for)
    assert proxy.requests_to("_catalog") >= 1

    # A literal repository that does not exist (yet) is no error, and holds nothing.
    assert literal_result.errors == []
    assert literal_result.cursor == {"local": {f"{prefix}/api": {"1.0": digest}}}
    assert globbed_result.cursor == literal_result.cursor


def test_a_failing_repository_keeps_its_cursor_while_the_others_progress(
    registry, tmp_path, prefix, proxy
):
    push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "t1")
    push_variant(registry, tmp_path, f"{prefix}/worker", "1.0", "t2")
    config = RegistryConfig(name="local", url=proxy.url, repositories=(f"{prefix}/*",))
    first = watch([config], {}, client_for)

    missed = push_variant(registry, tmp_path, f"{prefix}/api", "1.1", "t3")
    progressed = push_variant(registry, tmp_path, f"{prefix}/worker", "1.1", "t4")
    proxy.fail(f"/v2/{prefix}/api/")
    during = watch([config], first.cursor, client_for)
    proxy.heal()
    after = watch([config], during.cursor, client_for)

    assert [i.digest for i in during.new_images] == [progressed]
    assert [(e.registry, e.repository) for e in during.errors] == [("local", f"{prefix}/api")]
    assert "HTTP 500" in during.errors[0].message
    assert during.failed_registries == []
    assert during.cursor["local"][f"{prefix}/api"] == first.cursor["local"][f"{prefix}/api"]
    assert [i.digest for i in after.new_images] == [missed]
    assert after.errors == []


def test_an_unreachable_registry_keeps_its_whole_cursor_and_catches_up(
    registry, tmp_path, prefix, proxy
):
    for index in range(3):
        push_variant(registry, tmp_path, f"{prefix}/r{index}", "1.0", f"u{index}")
    config = RegistryConfig(name="local", url=proxy.url, repositories=(f"{prefix}/*",))
    first = watch([config], {}, client_for)
    missed = push_variant(registry, tmp_path, f"{prefix}/r2", "1.1", "u9")

    proxy.stall("/tags/list")
    during = watch([config], first.cursor, client_for)
    proxy.heal()
    after = watch([config], during.cursor, client_for)

    assert during.failed_registries == ["local"] and during.new_images == []
    assert during.cursor == first.cursor
    assert {e.repository for e in during.errors} == {f"{prefix}/r{i}" for i in range(3)}
    assert all("no answer within" in e.message for e in during.errors)
    assert [i.digest for i in after.new_images] == [missed]


def test_vanished_repositories_leave_the_cursor(registry, tmp_path, prefix):
    digest = push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "v1")
    previous = {
        "local": {
            f"{prefix}/api": {"1.0": digest},
            f"{prefix}/deleted": {"1.0": "sha256:" + "0" * 64},
        }
    }
    config = RegistryConfig(name="local", url=registry.url, repositories=(f"{prefix}/*",))

    result = watch([config], previous, client_for)

    assert result.cursor == {"local": {f"{prefix}/api": {"1.0": digest}}}
    assert result.new_images == [] and result.errors == []


def test_a_registry_whose_credentials_fail_keeps_its_cursor_the_others_progress(
    registry, tmp_path, prefix
):
    digest = push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "w1")
    good = RegistryConfig(name="local", url=registry.url, repositories=(f"{prefix}/api",))
    locked = RegistryConfig(name="locked", url="https://registry.invalid", repositories=("a",))
    previous = {"locked": {"a": {"v1": "sha256:" + "1" * 64}}}

    def clients(config: RegistryConfig) -> RegistryClient:
        if config.name == "locked":
            raise RegistriesError("registry credentials: LOCKED_TOKEN not set in the environment")
        return client_for(config)

    result = watch([good, locked], previous, clients)

    assert [i.digest for i in result.new_images] == [digest]
    assert result.failed_registries == ["locked"]
    assert result.cursor["locked"] == previous["locked"]
    assert "LOCKED_TOKEN not set" in result.errors[0].message


def test_past_the_deadline_every_registry_waits_for_the_next_tick(registry, tmp_path, prefix):
    push_variant(registry, tmp_path, f"{prefix}/api", "1.0", "x1")
    config = RegistryConfig(name="local", url=registry.url, repositories=(f"{prefix}/api",))
    previous = {"local": {f"{prefix}/api": {"0.9": "sha256:" + "2" * 64}}}

    result = watch([config], previous, client_for, deadline=time.monotonic() - 1)

    assert result.cursor == previous and result.new_images == []
    assert result.failed_registries == ["local"]
    assert "time budget" in result.errors[0].message
