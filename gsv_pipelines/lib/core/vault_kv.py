"""KV v2 in Vault / OpenBao: versioned reads and check-and-set writes, with clear errors.

Every error names the mount and path, never a value.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hvac
import hvac.exceptions
import requests


class KvError(RuntimeError):
    """A KV v2 operation failed; the message says why (never with a secret value)."""


class CasConflict(KvError):
    """Someone wrote the secret since it was read: nothing was overwritten."""


class SecretMissing(KvError):
    """The path holds no (live) version."""


@dataclass(frozen=True)
class KvSecret:
    mount: str
    path: str
    version: int
    data: dict[str, Any]
    created_time: datetime  # of this version


def _time(text: str) -> datetime:
    # Vault writes nanoseconds; Python's parser takes at most microseconds.
    head, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "." + (rest + "000000")[:6] + "+00:00")


def access_problem(exc: Exception, what: str, where: str) -> str | None:
    """The reason Vault could not be used at all (unreachable, sealed, forbidden), else None."""
    if isinstance(exc, requests.RequestException):
        return f"Vault is unreachable ({type(exc).__name__}): cannot {what} {where}"
    if isinstance(exc, hvac.exceptions.VaultDown):
        return f"Vault is sealed or down: cannot {what} {where}"
    if isinstance(exc, hvac.exceptions.Forbidden):
        return f"the Vault token may not {what} {where} (permission denied)"
    return None


def _describe(exc: Exception, mount: str, path: str) -> KvError:
    where = f"{mount}/{path}"
    problem = access_problem(exc, "use", where)
    if problem:
        return KvError(problem)
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return SecretMissing(f"no secret at {where} (or no KV v2 mount {mount!r})")
    return KvError(f"Vault refused an operation on {where}: {type(exc).__name__}")


def read(client: hvac.Client, mount: str, path: str, version: int | None = None) -> KvSecret:
    """The current (or a given) version of a secret, with its version number and time."""
    try:
        response = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, version=version, raise_on_deleted_version=True
        )
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _describe(exc, mount, path) from None
    return KvSecret(
        mount=mount,
        path=path,
        version=response["data"]["metadata"]["version"],
        data=response["data"]["data"],
        created_time=_time(response["data"]["metadata"]["created_time"]),
    )


def write(client: hvac.Client, mount: str, path: str, data: dict[str, Any], cas: int) -> int:
    """Write `data` only if the current version is still `cas` (0: only if absent)."""
    try:
        response = client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, cas=cas, mount_point=mount
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "check-and-set" in str(exc):
            raise CasConflict(
                f"{mount}/{path} changed since version {cas} was read: not overwritten"
            ) from None
        raise _describe(exc, mount, path) from None
    except (requests.RequestException, hvac.exceptions.VaultError) as exc:
        raise _describe(exc, mount, path) from None
    return response["data"]["version"]
