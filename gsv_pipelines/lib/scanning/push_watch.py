"""Which image digests appeared in the watched registries since the last look. No Dagster here:
image_push_sensor keeps the cursor and turns new digests into scans.

The cursor is what each tag pointed at when last seen, `{registry name: {repository: {tag:
digest}}}`, JSON as is. A digest is new when no tag of any repository in any registry pointed at it
before: re-tagging or copying an image scans nothing, re-pushing a tag with new content scans it
once. A registry or repository that cannot be read keeps its previous part of the cursor, so what
it holds is neither missed nor taken for new when it answers again.

A new digest's manifest is read once, to tell images from the other artifacts a repository holds
(artifacts.py): those are skipped and counted, and remembered in the cursor like any digest. A
manifest that cannot be read leaves its tags out of the cursor, to be read on a later tick.
"""

import json
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gsv_pipelines.lib.scanning.artifacts import artifact_kind
from gsv_pipelines.lib.scanning.registries import RegistryConfig
from gsv_pipelines.lib.scanning.registry_client import (
    WORKERS,
    RegistryClient,
    RegistryError,
    list_digests,
)

Cursor = dict[str, dict[str, dict[str, str]]]
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class NewImage:
    digest: str
    reference: str  # host[:port]/repository@digest: what the scan pulls
    registry: str
    repository: str
    tag: str


@dataclass(frozen=True)
class SkippedArtifact:
    """A new digest that is not an image: what it is instead, and where."""

    digest: str
    kind: str  # "Trivy DB", "cosign signature", "SBOM", ...
    registry: str
    repository: str
    tag: str


@dataclass(frozen=True)
class WatchError:
    registry: str
    repository: str | None  # None: the whole registry
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class WatchResult:
    new_images: list[NewImage]
    cursor: Cursor
    errors: list[WatchError]
    repositories: int = 0  # read this time
    tags: int = 0  # resolved this time
    failed_registries: list[str] = field(default_factory=list)  # no progress at all
    skipped: list[SkippedArtifact] = field(default_factory=list)  # new digests, not images


def load_cursor(text: str | None) -> Cursor:
    """The cursor a sensor stored (None or empty: nothing seen yet)."""
    if not text:
        return {}
    cursor = json.loads(text)
    if not isinstance(cursor, dict):
        raise ValueError("push-watch cursor: expected a JSON object")
    return cursor


def dump_cursor(cursor: Cursor) -> str:
    return json.dumps(cursor, sort_keys=True, separators=(",", ":"))


def repositories_to_watch(client: RegistryClient, config: RegistryConfig) -> list[str]:
    """The configured repositories: literal names as they are (Docker Hub and others refuse the
    catalog), else the catalog filtered by the patterns."""
    patterns = config.repositories
    if patterns and not any(GLOB_CHARACTERS & set(pattern) for pattern in patterns):
        return sorted(set(patterns))
    return sorted(name for name in client.catalog() if config.watches(name))


def watch(
    configs: Iterable[RegistryConfig],
    previous: Mapping[str, Mapping[str, Mapping[str, str]]],
    client_for: Callable[[RegistryConfig], RegistryClient],
    *,
    workers: int = WORKERS,
    deadline: float | None = None,
) -> WatchResult:
    """List every watched repository's tags, resolve their digests, and compare with `previous`.
    `client_for` opens a client for a registry (its credentials may fail: that registry is then
    reported and skipped); each client is closed here. Repositories not started by `deadline`
    (time.monotonic()) keep their previous part and are reported, so a tick ends in time."""
    configs = list(configs)
    known = {
        digest
        for repositories in previous.values()
        for tags in repositories.values()
        for digest in tags.values()
    }
    result = WatchResult(new_images=[], cursor={}, errors=[])
    kinds: dict[str, str | None] = {}  # each new digest's artifact kind; None: an image
    for config in configs:
        prior = {repo: dict(tags) for repo, tags in previous.get(config.name, {}).items()}
        part, progressed = _watch_registry(
            config, prior, known, kinds, client_for, workers, deadline, result
        )
        result.cursor[config.name] = part
        if not progressed:
            result.failed_registries.append(config.name)

    seen: set[str] = set()
    for config in configs:
        for repository, tags in sorted(result.cursor[config.name].items()):
            for tag, digest in sorted(tags.items()):
                if digest in known or digest in seen:
                    continue
                seen.add(digest)
                if kinds.get(digest) is not None:
                    result.skipped.append(
                        SkippedArtifact(digest, kinds[digest], config.name, repository, tag)
                    )
                    continue
                result.new_images.append(
                    NewImage(
                        digest=digest,
                        reference=config.reference(repository, digest),
                        registry=config.name,
                        repository=repository,
                        tag=tag,
                    )
                )
    return result


def _watch_registry(
    config: RegistryConfig,
    prior: dict[str, dict[str, str]],
    known: set[str],
    kinds: dict[str, str | None],
    client_for: Callable[[RegistryConfig], RegistryClient],
    workers: int,
    deadline: float | None,
    result: WatchResult,
) -> tuple[dict[str, dict[str, str]], bool]:
    """This registry's next cursor part, and whether any of it was read."""
    if deadline is not None and time.monotonic() > deadline:
        message = f"{config.name}: left for the next tick: the tick's time budget is spent"
        result.errors.append(WatchError(config.name, None, message))
        return prior, False
    try:
        client = client_for(config)
    except Exception as exc:  # credentials: a missing variable, Vault sealed or refusing
        result.errors.append(
            WatchError(config.name, None, f"{config.name}: {type(exc).__name__}: {exc}")
        )
        return prior, False
    with client:
        try:
            repositories = repositories_to_watch(client, config)
        except RegistryError as exc:
            result.errors.append(WatchError(config.name, None, f"{config.name}: {exc}"))
            return prior, False
        listing = list_digests(client, repositories, workers=workers, deadline=deadline)
        part: dict[str, dict[str, str]] = {}
        for repository, tags in listing.found.items():
            if tags:  # an empty or vanished repository leaves the cursor
                part[repository] = dict(tags)
        _classify_new(client, config, part, prior, known, kinds, workers, deadline, result)
    for repository, error in listing.errors.items():
        result.errors.append(WatchError(config.name, repository, f"{config.name}: {error}"))
    unread = [r for r in repositories if r not in listing.found]
    for repository in unread:
        if repository in prior:  # nothing missed: read again next tick
            part[repository] = prior[repository]
    unreached = len(unread) - len(listing.errors)
    if unreached:
        reason = (
            "the registry is unreachable"
            if any(error.unreachable for error in listing.errors.values())
            else "the tick's time budget is spent"
        )
        result.errors.append(
            WatchError(
                config.name,
                None,
                f"{config.name}: {unreached} repositories left for the next tick: {reason}",
            )
        )
    result.repositories += len(listing.found)
    result.tags += listing.tags
    return part, bool(listing.found) or not repositories


def _classify_new(
    client: RegistryClient,
    config: RegistryConfig,
    part: dict[str, dict[str, str]],
    prior: Mapping[str, Mapping[str, str]],
    known: set[str],
    kinds: dict[str, str | None],
    workers: int,
    deadline: float | None,
    result: WatchResult,
) -> None:
    """Read the manifest of each digest in `part` not seen before, into `kinds`. A tag whose
    manifest could not be read keeps its previous digest (or leaves `part`): the next tick tries
    again, so nothing is missed or scanned unclassified."""
    new: dict[str, str] = {}  # digest -> a repository holding it
    for repository, tags in sorted(part.items()):
        for digest in tags.values():
            if digest not in known and digest not in kinds:
                new.setdefault(digest, repository)

    def classify(digest: str, repository: str) -> str | None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("left for the next tick: the tick's time budget is spent")
        manifest, content_type = client.manifest(repository, digest)
        return artifact_kind(manifest, content_type)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oci-manifest") as pool:
        futures = {digest: pool.submit(classify, digest, repo) for digest, repo in new.items()}
    unread = set()
    for digest, future in futures.items():
        try:
            kinds[digest] = future.result()
        except (RegistryError, TimeoutError) as exc:
            unread.add(digest)
            message = f"{config.name}: manifest {digest[:19]} of {new[digest]}: {exc}"
            result.errors.append(WatchError(config.name, new[digest], message))
    for repository, tags in part.items():
        for tag, digest in list(tags.items()):
            if digest in unread:
                previous = prior.get(repository, {}).get(tag)
                if previous is None:
                    del tags[tag]
                else:
                    tags[tag] = previous
