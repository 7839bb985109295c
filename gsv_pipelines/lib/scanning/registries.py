"""The registries to watch (`GSV_REGISTRIES`): which registries, which repositories, which
credentials. Example:

    registries:
      - name: platform                     # unique, [a-z0-9-]
        url: https://registry.gsv.example  # scheme + host[:port]; http:// only for loopback/dev
        repositories: ["platform/*", "agents/runtime"]   # fnmatch patterns; omitted: all (catalog)
        tls_verify: true                   # false: self-signed HTTPS (Trivy gets --insecure)
        credentials:                       # omitted: anonymous
          env: {username: REGISTRY_USER, password: REGISTRY_TOKEN}    # variable names
          # or
          vault: {path: registries/platform, mount: secret,            # KV v2
                  username_key: username, password_key: password}

Credentials are names of places, never values: the values are read when needed and never logged.
"""

import fnmatch
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gsv_pipelines.lib.core.policy_file import read_policy

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RegistriesError(ValueError):
    """The registries file cannot be used; the message names the file, entry and key."""


@dataclass(frozen=True)
class Credentials:
    username_env: str | None = None
    password_env: str | None = None
    vault_path: str | None = None
    vault_mount: str = "secret"
    vault_username_key: str = "username"
    vault_password_key: str = "password"

    @property
    def from_vault(self) -> bool:
        return self.vault_path is not None


@dataclass(frozen=True)
class RegistryConfig:
    name: str
    url: str  # scheme://host[:port], no trailing slash
    repositories: tuple[str, ...] = ()  # fnmatch patterns; empty: every repository
    tls_verify: bool = True
    credentials: Credentials | None = None

    @property
    def host(self) -> str:
        """host[:port], as it appears in image references."""
        return urlsplit(self.url).netloc

    @property
    def plain_http(self) -> bool:
        return urlsplit(self.url).scheme == "http"

    def watches(self, repository: str) -> bool:
        return not self.repositories or any(
            fnmatch.fnmatchcase(repository, pattern) for pattern in self.repositories
        )

    def reference(self, repository: str, digest: str) -> str:
        """The pullable reference of a digest in this registry."""
        return f"{self.host}/{repository}@{digest}"


def load_registries(path: Path | None) -> tuple[RegistryConfig, ...]:
    """The registries listed in `path`; none when `path` is None (the push sensor idles)."""
    if path is None:
        return ()
    document = read_policy(path, "registries file", RegistriesError)
    if not isinstance(document, dict) or not isinstance(document.get("registries"), list):
        raise RegistriesError(f"registries file {path}: expected a top-level `registries:` list")
    configs, names = [], set()
    for index, entry in enumerate(document["registries"]):
        config = _registry(entry, f"registries file {path}, entry {index + 1}")
        if config.name in names:
            raise RegistriesError(f"registries file {path}: name {config.name!r} appears twice")
        names.add(config.name)
        configs.append(config)
    return tuple(configs)


def registry_for(configs: tuple[RegistryConfig, ...], reference: str) -> RegistryConfig | None:
    """The configured registry an image reference (`host[:port]/repo@digest`) lives in."""
    host = reference.split("/", 1)[0]
    return next((config for config in configs if config.host == host), None)


def resolve_credentials(
    credentials: Credentials | None,
    *,
    environ: Mapping[str, str] | None = None,
    read_vault: Callable[[str, str], Mapping[str, Any]] | None = None,
) -> tuple[str, str] | None:
    """(username, password), read from the environment or Vault (`read_vault(mount, path)` gives
    the KV data); None for anonymous access. Errors name the variable or path, never a value."""
    if credentials is None:
        return None
    if credentials.from_vault:
        if read_vault is None:
            raise RegistriesError(
                f"registry credentials at Vault path {credentials.vault_path} need the Vault "
                "resource (VAULT_ADDR and a token or AppRole)"
            )
        data = read_vault(credentials.vault_mount, credentials.vault_path)
        where = f"Vault {credentials.vault_mount}/{credentials.vault_path}"
        keys = (credentials.vault_username_key, credentials.vault_password_key)
    else:
        data = os.environ if environ is None else environ
        where = "the environment"
        keys = (credentials.username_env, credentials.password_env)
    missing = [key for key in keys if not data.get(key)]
    if missing:
        raise RegistriesError(f"registry credentials: {', '.join(missing)} not set in {where}")
    return str(data[keys[0]]), str(data[keys[1]])


def _registry(entry: Any, where: str) -> RegistryConfig:
    if not isinstance(entry, dict):
        raise RegistriesError(f"{where}: expected a mapping")
    unknown = set(entry) - {"name", "url", "repositories", "tls_verify", "credentials"}
    if unknown:
        raise RegistriesError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise RegistriesError(f"{where}: `name` must match {NAME.pattern}")
    url = entry.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if (
        not parts
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path.strip("/")
    ):
        raise RegistriesError(f"{where} ({name}): `url` must be http(s)://host[:port]")
    repositories = entry.get("repositories") or []
    if not isinstance(repositories, list) or not all(isinstance(r, str) for r in repositories):
        raise RegistriesError(f"{where} ({name}): `repositories` must be a list of patterns")
    tls_verify = entry.get("tls_verify", True)
    if not isinstance(tls_verify, bool):
        raise RegistriesError(f"{where} ({name}): `tls_verify` must be true or false")
    return RegistryConfig(
        name=name,
        url=f"{parts.scheme}://{parts.netloc}",
        repositories=tuple(repositories),
        tls_verify=tls_verify,
        credentials=_credentials(entry.get("credentials"), f"{where} ({name})"),
    )


def _credentials(value: Any, where: str) -> Credentials | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("env", "vault"):
        raise RegistriesError(f"{where}: `credentials` must hold exactly one of `env` or `vault`")
    kind, spec = next(iter(value.items()))
    if not isinstance(spec, dict):
        raise RegistriesError(f"{where}: `credentials.{kind}` must be a mapping")
    if kind == "env":
        if set(spec) != {"username", "password"} or not all(
            isinstance(v, str) for v in spec.values()
        ):
            raise RegistriesError(
                f"{where}: `credentials.env` needs `username` and `password` variable names"
            )
        return Credentials(username_env=spec["username"], password_env=spec["password"])
    allowed = {"path", "mount", "username_key", "password_key"}
    if not isinstance(spec.get("path"), str) or set(spec) - allowed:
        raise RegistriesError(
            f"{where}: `credentials.vault` needs `path` "
            "(and optionally mount, username_key, password_key)"
        )
    return Credentials(
        vault_path=spec["path"].strip("/"),
        vault_mount=str(spec.get("mount", "secret")),
        vault_username_key=str(spec.get("username_key", "username")),
        vault_password_key=str(spec.get("password_key", "password")),
    )
