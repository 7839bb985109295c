"""Vault / OpenBao through hvac, authenticated by token, AppRole or Kubernetes service account."""

from pathlib import Path

import dagster as dg
import hvac
import hvac.exceptions
import requests
from pydantic import Field

K8S_SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class VaultError(RuntimeError):
    """Vault cannot be used: unreachable, sealed, or the credentials are refused."""


class VaultResource(dg.ConfigurableResource):
    """A Vault (or OpenBao) server. Exactly one way to log in must be configured."""

    addr: str = Field(description="Vault's address, e.g. https://vault.vault.svc:8200")
    token: str | None = Field(default=None, description="a Vault token (VAULT_TOKEN)")
    role_id: str | None = Field(default=None, description="AppRole role ID (VAULT_ROLE_ID)")
    secret_id: str | None = Field(default=None, description="AppRole secret ID (VAULT_SECRET_ID)")
    k8s_role: str | None = Field(default=None, description="Kubernetes auth role (VAULT_K8S_ROLE)")
    timeout_seconds: int = 10

    def client(self) -> hvac.Client:
        """An authenticated client; raises VaultError saying what is wrong, never with a secret."""
        client = hvac.Client(url=self.addr, timeout=self.timeout_seconds)
        try:
            if client.sys.is_sealed():
                raise VaultError(f"Vault at {self.addr} is sealed: unseal it, then re-run")
            if self.token:
                client.token = self.token
            elif self.role_id and self.secret_id:
                client.auth.approle.login(role_id=self.role_id, secret_id=self.secret_id)
            elif self.k8s_role:
                jwt = K8S_SERVICE_ACCOUNT_TOKEN.read_text().strip()
                client.auth.kubernetes.login(role=self.k8s_role, jwt=jwt)
            else:
                raise VaultError(
                    "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID, "
                    "or VAULT_K8S_ROLE"
                )
            if not client.is_authenticated():
                raise VaultError(f"Vault at {self.addr} refused the configured token")
        except requests.exceptions.RequestException as exc:
            raise VaultError(
                f"Vault at {self.addr} is unreachable ({type(exc).__name__})"
            ) from None
        except (
            hvac.exceptions.Forbidden,
            hvac.exceptions.Unauthorized,
            hvac.exceptions.InvalidRequest,
        ):
            raise VaultError(f"Vault at {self.addr} refused the configured login") from None
        except OSError as exc:
            raise VaultError(f"cannot read the Kubernetes service account token: {exc}") from None
        return client
