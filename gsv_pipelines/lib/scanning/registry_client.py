"""A client for the OCI distribution API (a registry's HTTP API v2) over requests: repository
catalog, tag lists, manifest digests. Anonymous, Basic or Bearer-token access (the token challenge
flow Docker Hub, GHCR, Harbor and GitLab use). No Dagster here.

Credentials are only ever sent in Authorization headers: no URL, log line or error carries them.
"""

import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin

import requests
from requests.adapters import HTTPAdapter

from gsv_pipelines.lib.scanning.registries import RegistryConfig

# Every manifest kind a tag may point at: multi-platform indexes first, so a registry never
# converts one (a down-converted manifest would have another digest than the one pushed).
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
TIMEOUT = (5.0, 10.0)  # (connect, read) seconds
WORKERS = 16
PAGE_SIZE = 100  # distribution refuses `n` above its catalog.maxentries (1000 by default)
MAX_PAGES = 10_000
CATALOG_SCOPE = "registry:catalog:*"
DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


class RegistryError(RuntimeError):
    """A registry request failed. Names the registry URL, repository and HTTP status, never a
    credential. `unreachable` is true for connection failures and timeouts: the whole registry is
    then unusable, not one repository."""

    def __init__(
        self,
        registry: str,
        message: str,
        *,
        repository: str | None = None,
        status: int | None = None,
        unreachable: bool = False,
    ):
        self.registry = registry
        self.repository = repository
        self.status = status
        self.unreachable = unreachable
        where = f"registry {registry}" + (f", repository {repository}" if repository else "")
        super().__init__(f"{where}: " + (f"HTTP {status}: " if status else "") + message)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """(scheme in lower case, parameters) of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


class RegistryClient:
    """One registry. Thread-safe for concurrent reads: one requests Session whose connection pool
    holds `pool_size` connections (more concurrent requests wait for a free one), and tokens
    cached per scope until shortly before they expire."""

    def __init__(
        self,
        config: RegistryConfig,
        credentials: tuple[str, str] | None = None,
        *,
        timeout: tuple[float, float] = TIMEOUT,
        pool_size: int = WORKERS,
        page_size: int = PAGE_SIZE,
    ):
        self.config = config
        self.url = config.url
        self.timeout = timeout
        self.page_size = page_size
        self._credentials = credentials
        self._basic = False  # the registry asked for Basic: send it with every request from now on
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, monotonic expiry)
        self._token_lock = threading.Lock()
        self._session = requests.Session()
        # Passed with every request, not set on the session: requests lets REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE override a session's verify=False (only a request's own False holds).
        self._verify = config.tls_verify
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, pool_block=True)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # The API.

    def catalog(self) -> list[str]:
        """Every repository the credentials may see (`GET /v2/_catalog`, all pages)."""
        names: list[str] = []
        for page in self._pages(f"/v2/_catalog?n={self.page_size}", CATALOG_SCOPE, None):
            names.extend(page.get("repositories") or [])
        return names

    def tags(self, repository: str) -> list[str] | None:
        """The repository's tags (`GET /v2/<repo>/tags/list`, all pages); None when the
        registry does not know the repository (never pushed, or deleted)."""
        path = f"/v2/{_name(repository)}/tags/list?n={self.page_size}"
        tags: list[str] = []
        try:
            for page in self._pages(path, _pull_scope(repository), repository):
                tags.extend(page.get("tags") or [])
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        return tags

    def digest(self, repository: str, tag: str) -> str | None:
        """The digest of the manifest `tag` points at; None when the tag no longer exists.
        HEAD with Docker-Content-Digest; a registry that omits the header gets a GET, and the
        digest is the sha256 of the manifest's bytes."""
        path = f"/v2/{_name(repository)}/manifests/{quote(tag, safe='')}"
        headers = {"Accept": MANIFEST_ACCEPT}
        scope = _pull_scope(repository)
        response = self._request("HEAD", path, scope, repository, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code != 405:
            self._check(response, repository)
            header = response.headers.get("Docker-Content-Digest", "").strip()
            if header:
                if not DIGEST.match(header):
                    raise RegistryError(
                        self.url,
                        f"tag {tag}: malformed Docker-Content-Digest {header[:80]!r}",
                        repository=repository,
                    )
                return header
        response = self._request("GET", path, scope, repository, headers=headers)
        if response.status_code == 404:
            return None
        self._check(response, repository)
        return f"sha256:{hashlib.sha256(response.content).hexdigest()}"

    def manifest(self, repository: str, digest: str) -> tuple[dict, str]:
        """The manifest `digest` names in `repository` (parsed JSON) and its Content-Type."""
        path = f"/v2/{_name(repository)}/manifests/{quote(digest, safe=':')}"
        response = self._request(
            "GET", path, _pull_scope(repository), repository, headers={"Accept": MANIFEST_ACCEPT}
        )
        self._check(response, repository)
        try:
            manifest = response.json()
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict):
            raise RegistryError(
                self.url, f"manifest {digest} is not a JSON object", repository=repository
            )
        return manifest, response.headers.get("Content-Type", "")

    # HTTP, pagination, authentication.

    def _pages(self, path: str, scope: str, repository: str | None) -> Iterator[dict]:
        url: str | None = self.url + path
        seen: set[str] = set()
        while url and len(seen) < MAX_PAGES:
            seen.add(url)
            response = self._request("GET", url, scope, repository)
            self._check(response, repository)
            try:
                page = response.json()
            except ValueError:
                page = None
            if not isinstance(page, dict):
                raise RegistryError(
                    self.url,
                    f"GET {_path(url)} did not answer a JSON object",
                    repository=repository,
                )
            yield page
            link = response.links.get("next", {}).get("url")
            url = urljoin(response.url, link) if link else None
            if url in seen:
                url = None

    def _request(
        self,
        method: str,
        path_or_url: str,
        scope: str,
        repository: str | None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        url = (
            path_or_url
            if path_or_url.startswith(("http://", "https://"))
            else self.url + path_or_url
        )
        response = None
        for _ in range(2):
            sent = dict(headers or {})
            authorization = self._authorization(scope)
            if authorization:
                sent["Authorization"] = authorization
            response = self._send(method, url, sent, repository)
            if response.status_code != 401:
                return response
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if not self._answer(challenge, scope, repository, authorization):
                return response
        return response

    def _send(
        self, method: str, url: str, headers: dict[str, str], repository: str | None
    ) -> requests.Response:
        try:
            return self._session.request(
                method, url, headers=headers, timeout=self.timeout, verify=self._verify
            )
        except requests.Timeout:
            raise RegistryError(
                self.url,
                f"no answer within {self.timeout[0]:g} s (connect) / {self.timeout[1]:g} s (read)",
                repository=repository,
                unreachable=True,
            ) from None
        except requests.exceptions.SSLError:
            raise RegistryError(
                self.url,
                "TLS verification failed (tls_verify: false for a self-signed certificate)",
                repository=repository,
                unreachable=True,
            ) from None
        except requests.RequestException as exc:
            raise RegistryError(
                self.url,
                f"unreachable ({type(exc).__name__})",
                repository=repository,
                unreachable=True,
            ) from None

    def _authorization(self, scope: str) -> str | None:
        cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        if self._basic and self._credentials:
            return _basic(self._credentials)
        return None

    def _answer(
        self,
        challenge: tuple[str, dict[str, str]],
        scope: str,
        repository: str | None,
        refused: str | None,
    ) -> bool:
        """Act on a 401's challenge to the `refused` Authorization; whether to send again."""
        scheme, params = challenge
        if scheme == "basic":
            if not self._credentials or self._basic:
                return False
            self._basic = True
            return True
        if scheme == "bearer" and params.get("realm"):
            self._fetch_token(params, scope, repository, refused)
            return True
        return False

    def _fetch_token(
        self, params: dict[str, str], scope: str, repository: str | None, refused: str | None
    ) -> None:
        with self._token_lock:
            cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic() and f"Bearer {cached[0]}" != refused:
                return  # another thread fetched a fresh one meanwhile
            query = {"scope": params.get("scope") or scope}
            if params.get("service"):
                query["service"] = params["service"]
            headers = {"Authorization": _basic(self._credentials)} if self._credentials else {}
            realm = params["realm"]
            try:
                response = self._session.get(
                    realm, params=query, headers=headers, timeout=self.timeout, verify=self._verify
                )
            except requests.RequestException as exc:
                raise RegistryError(
                    self.url,
                    f"token service {realm} unreachable ({type(exc).__name__})",
                    repository=repository,
                    unreachable=True,
                ) from None
            if not response.ok:
                raise RegistryError(
                    self.url,
                    f"token service {realm} refused the request"
                    + (" (check the credentials)" if response.status_code in (401, 403) else ""),
                    repository=repository,
                    status=response.status_code,
                )
            try:
                body = response.json()
                token = body.get("token") or body.get("access_token")
                lifetime = float(body.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                token = None
            if not token:
                raise RegistryError(
                    self.url, f"token service {realm} answered no token", repository=repository
                )
            # Renew a little early: a token expiring in flight would cost a 401 and a retry.
            self._tokens[scope] = (token, time.monotonic() + max(lifetime - 10, lifetime / 2))

    def _check(self, response: requests.Response, repository: str | None) -> None:
        if response.ok:
            return
        if response.status_code == 401:
            detail = (
                "the registry refused the credentials"
                if self._credentials
                else "the registry requires credentials (none configured)"
            )
        elif response.status_code == 403:
            detail = "access denied"
        else:
            detail = _error_detail(response) or response.reason or "request failed"
        raise RegistryError(
            self.url,
            f"{response.request.method} {_path(response.request.url)}: {detail}",
            repository=repository,
            status=response.status_code,
        )


@dataclass
class Listing:
    """What list_digests read: complete repositories, and the first error of each failed one.
    A repository in neither was not reached (the registry became unreachable, or the deadline
    passed first)."""

    found: dict[str, dict[str, str]] = field(default_factory=dict)  # repository -> {tag: digest}
    errors: dict[str, RegistryError] = field(default_factory=dict)

    @property
    def tags(self) -> int:
        return sum(len(tags) for tags in self.found.values())


_SKIPPED = object()


def list_digests(
    client: RegistryClient,
    repositories: Iterable[str],
    *,
    workers: int = WORKERS,
    deadline: float | None = None,
) -> Listing:
    """Every tag's digest in `repositories`: tag lists and manifest HEADs in one pool of at most
    `workers` requests in flight, so many small repositories go as fast as one large one. A
    repository's first error ends its work (its other requests are skipped); an unreachable
    registry ends all of it, so it costs one timeout, not one per tag. Nothing starts after
    `deadline` (time.monotonic()). Tags deleted meanwhile are left out; an unknown repository
    has no tags."""
    listing = Listing()
    digests: dict[str, dict[str, str]] = {}
    outstanding: dict[str, int] = {}
    stop = threading.Event()

    def guarded(repository: str, call, *args):
        if stop.is_set() or repository in listing.errors:
            return _SKIPPED
        if deadline is not None and time.monotonic() > deadline:
            return _SKIPPED
        return call(*args)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oci") as pool:
        running = {
            pool.submit(guarded, repository, client.tags, repository): (repository, None)
            for repository in dict.fromkeys(repositories)
        }
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    repository, tag = running.pop(future)
                    try:
                        value = future.result()
                    except RegistryError as exc:
                        listing.errors.setdefault(repository, exc)
                        if exc.unreachable:
                            stop.set()
                        continue
                    if value is _SKIPPED:
                        continue
                    if tag is None:  # the repository's tag list: now its manifests
                        tags = value or []
                        digests[repository], outstanding[repository] = {}, len(tags)
                        for name in tags:
                            head = pool.submit(guarded, repository, client.digest, repository, name)
                            running[head] = (repository, name)
                    else:
                        outstanding[repository] -= 1
                        if value is not None:
                            digests[repository][tag] = value
                    if outstanding[repository] == 0 and repository not in listing.errors:
                        found = digests[repository]
                        listing.found[repository] = {name: found[name] for name in sorted(found)}
        finally:
            stop.set()  # on the way out (an error here, Ctrl-C): what is queued does nothing
    return listing


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _name(repository: str) -> str:
    return quote(repository, safe="/")


def _path(url: str) -> str:
    """The path and query of a request URL, for messages (no credentials are ever in URLs)."""
    return "/" + url.split("://", 1)[-1].partition("/")[2]


def _error_detail(response: requests.Response) -> str:
    """The distribution API's error codes and messages, if the body holds them."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return text[:200]
