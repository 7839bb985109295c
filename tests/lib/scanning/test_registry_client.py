"""The OCI distribution client against real docker-registry servers: open, and with token auth
(the Bearer challenge flow, tokens issued by a small JWT issuer here that the real registry
verifies). Faults come from FlakyProxy in front of the real registry."""

import base64
import json
import shutil
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from gsv_pipelines.demo.oci_image import build_alpine_image
from gsv_pipelines.lib.core.processes import ManagedProcess, free_port
from gsv_pipelines.lib.scanning.registries import RegistryConfig
from gsv_pipelines.lib.scanning.registry_client import (
    MANIFEST_ACCEPT,
    RegistryClient,
    RegistryError,
    list_digests,
    parse_challenge,
)
from tests.services.flaky_proxy import FlakyProxy

USER, PASSWORD = "scanner", "token-flow-password-9f2c"


def push_variant(registry, tmp_path, repository: str, tag: str, variant: str) -> str:
    """Push an image whose digest depends on `variant` only; its digest."""
    layout = tmp_path / f"layout-{variant}"
    digest = build_alpine_image(layout, tag, [("gsv-probe", f"{variant}-r0", "gsv-probe")])
    registry.push(layout, repository, tag)
    return digest


def retag(url: str, repository: str, tag: str, new_tags: list[str]) -> None:
    """Point more tags at `tag`'s manifest (a manifest PUT, as `docker tag && docker push`)."""
    with requests.Session() as session:
        manifest = session.get(
            f"{url}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}
        )
        manifest.raise_for_status()
        for new_tag in new_tags:
            session.put(
                f"{url}/v2/{repository}/manifests/{new_tag}",
                data=manifest.content,
                headers={"Content-Type": manifest.headers["Content-Type"]},
            ).raise_for_status()


@pytest.fixture
def proxy(registry):
    flaky = FlakyProxy(registry.url).start()
    yield flaky
    flaky.stop()


def client_of(url: str, **kwargs) -> RegistryClient:
    return RegistryClient(RegistryConfig(name="test", url=url), **kwargs)


def test_tags_and_digests_of_pushed_images(registry, tmp_path):
    repository = f"client/{uuid.uuid4().hex[:8]}"
    first = push_variant(registry, tmp_path, repository, "1.0", "a1")
    second = push_variant(registry, tmp_path, repository, "2.0", "a2")
    retag(registry.url, repository, "2.0", ["latest"])

    with client_of(registry.url) as client:
        tags = client.tags(repository)
        listing = list_digests(client, [repository, f"{repository}-never-pushed"], workers=4)
        assert client.digest(repository, "missing") is None
        assert client.tags(f"{repository}-never-pushed") is None

    assert sorted(tags) == ["1.0", "2.0", "latest"]
    assert listing.found == {
        repository: {"1.0": first, "2.0": second, "latest": second},
        f"{repository}-never-pushed": {},
    }
    assert listing.errors == {} and listing.tags == 3
    assert first != second


def test_one_repository_failing_does_not_stop_the_others(registry, tmp_path, proxy):
    prefix = f"client-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/r{i}" for i in range(6)]
    for name in names:
        push_variant(registry, tmp_path, name, "1.0", "f1")
        retag(registry.url, name, "1.0", ["1.1", "1.2"])
    proxy.fail(f"/v2/{prefix}/r3/manifests/1.1")

    with client_of(proxy.url) as client:
        listing = list_digests(client, names, workers=3)

    assert sorted(listing.found) == [n for n in names if n != f"{prefix}/r3"]
    assert [(r, e.status) for r, e in listing.errors.items()] == [(f"{prefix}/r3", 500)]


def test_catalog_follows_link_pages(registry, tmp_path, proxy):
    prefix = f"paged-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/r{i}" for i in range(5)]
    for name in names:
        push_variant(registry, tmp_path, name, "1", "b1")

    with client_of(proxy.url, page_size=2) as client:
        catalog = client.catalog()

    assert [name for name in catalog if name.startswith(prefix)] == names
    assert len(catalog) == len(set(catalog))
    assert proxy.requests_to(r"^/v2/_catalog") >= 3  # five names, two per page


def test_digest_without_the_header_is_the_manifest_sha256(registry, tmp_path, proxy):
    repository = f"client/{uuid.uuid4().hex[:8]}"
    digest = push_variant(registry, tmp_path, repository, "1.0", "c1")
    proxy.drop_header(r"/manifests/", "Docker-Content-Digest")

    with client_of(proxy.url) as client:
        assert client.digest(repository, "1.0") == digest

    assert proxy.seen.count(("GET", f"/v2/{repository}/manifests/1.0")) == 1


def test_http_500_is_a_registry_error_naming_registry_repository_and_status(
    registry, tmp_path, proxy
):
    repository = f"client/{uuid.uuid4().hex[:8]}"
    push_variant(registry, tmp_path, repository, "1.0", "d1")
    proxy.fail(r"/tags/list")

    with client_of(proxy.url, credentials=(USER, PASSWORD)) as client:
        with pytest.raises(RegistryError) as caught:
            client.tags(repository)
        proxy.heal()
        assert client.tags(repository) == ["1.0"]

    error = caught.value
    assert (error.registry, error.repository, error.status) == (proxy.url, repository, 500)
    assert not error.unreachable
    assert proxy.url in str(error) and repository in str(error) and "HTTP 500" in str(error)
    assert PASSWORD not in str(error)


def test_a_stalled_registry_times_out_once_and_stops_the_other_requests(registry, tmp_path, proxy):
    repository = f"client/{uuid.uuid4().hex[:8]}"
    push_variant(registry, tmp_path, repository, "1.0", "e1")
    tags = [f"t{i:03d}" for i in range(60)]
    retag(registry.url, repository, "1.0", tags)
    proxy.stall(r"/manifests/")

    with client_of(proxy.url, timeout=(2.0, 0.5), pool_size=4) as client:
        listing = list_digests(client, [repository], workers=4)

    assert listing.found == {}
    [(failed, error)] = listing.errors.items()
    assert failed == repository and error.unreachable and "no answer within" in str(error)
    # The first timeout stopped what had not started: far fewer HEADs than tags.
    assert proxy.requests_to(r"/manifests/") < 20


def test_nothing_starts_after_the_deadline(registry, tmp_path, proxy):
    repository = f"client/{uuid.uuid4().hex[:8]}"
    push_variant(registry, tmp_path, repository, "1.0", "g1")

    with client_of(proxy.url) as client:
        late = list_digests(client, [repository], deadline=time.monotonic() - 1)
        in_time = list_digests(client, [repository], deadline=time.monotonic() + 60)

    assert (late.found, late.errors) == ({}, {})
    assert proxy.seen.count(("HEAD", f"/v2/{repository}/manifests/1.0")) == 1  # in_time's
    assert list(in_time.found) == [repository]


def test_an_unreachable_registry_is_an_unreachable_error():
    client = client_of(f"http://127.0.0.1:{free_port()}", timeout=(1.0, 1.0))
    with client, pytest.raises(RegistryError) as caught:
        client.catalog()
    assert caught.value.unreachable and caught.value.status is None


def test_parse_challenge():
    assert parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull"'
    ) == (
        "bearer",
        {
            "realm": "https://auth.example/token",
            "service": "registry.example",
            "scope": "repository:a/b:pull",
        },
    )
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


# Token auth: docker-registry verifies JWTs signed by a key whose certificate it trusts.


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Issues registry tokens (the Docker token spec) to USER:PASSWORD, for the scopes asked."""

    service, issuer = "gsv-test-registry", "gsv-test-issuer"

    def __init__(self, root):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gsv test token issuer")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.scopes: list[str] = []  # every scope asked for, in order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": USER,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self):
        issuer = self
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                issuer.scopes.extend(scopes)
                if self.headers.get("Authorization") != expected:
                    status, body = 401, {"details": "credentials required"}
                else:
                    status, body = 200, {"token": issuer.token(scopes), "expires_in": 300}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture(scope="module")
def token_registry(registry, tmp_path_factory):
    """A second docker-registry that only accepts TokenIssuer's tokens (`registry` first: it
    proves docker-registry can run here)."""
    root = tmp_path_factory.mktemp("registry-token")
    issuer = TokenIssuer(root)
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "auth:\n  token:\n"
        f"    realm: {issuer.realm}\n"
        f"    service: {issuer.service}\n"
        f"    issuer: {issuer.issuer}\n"
        f"    rootcertbundle: {issuer.bundle}\n"
    )
    process = ManagedProcess(
        "registry-token", [shutil.which("docker-registry"), "serve", config], root / "log"
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(lambda: requests.get(f"{url}/v2/", timeout=1).status_code == 401)
        layout = root / "layout"
        digest = build_alpine_image(layout, "1.0", [("gsv-probe", "tok-r0", "gsv-probe")])
        for tag in ("1.0", "1.1"):
            subprocess.run(
                [
                    "skopeo",
                    "--insecure-policy",
                    "copy",
                    "--dest-tls-verify=false",
                    f"--dest-creds={USER}:{PASSWORD}",
                    f"oci:{layout}",
                    f"docker://127.0.0.1:{port}/private/app:{tag}",
                ],
                check=True,
                capture_output=True,
            )
        yield {"url": url, "issuer": issuer, "digest": digest}
    finally:
        process.stop()
        issuer.stop()


def test_bearer_token_flow_with_tokens_cached_per_scope(token_registry):
    issuer = token_registry["issuer"]
    issuer.scopes.clear()

    with client_of(token_registry["url"], credentials=(USER, PASSWORD)) as client:
        assert "private/app" in client.catalog()
        listing = list_digests(client, ["private/app"], workers=8)
        # Many HEADs on one repository: the token fetched for its tag list serves them all.
        for _ in range(10):
            assert client.digest("private/app", "1.0") == token_registry["digest"]

    digest = token_registry["digest"]
    assert listing.found == {"private/app": {"1.0": digest, "1.1": digest}}
    assert issuer.scopes == ["registry:catalog:*", "repository:private/app:pull"]


@pytest.mark.parametrize("credentials", [None, (USER, "wrong-password-3e1d")])
def test_bearer_token_refused_is_a_clear_error_without_the_password(token_registry, credentials):
    client = client_of(token_registry["url"], credentials=credentials)
    with client, pytest.raises(RegistryError) as caught:
        client.tags("private/app")
    assert caught.value.status == 401 and caught.value.repository == "private/app"
    assert "token service" in str(caught.value)
    assert "wrong-password-3e1d" not in str(caught.value)
