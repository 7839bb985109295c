"""The container registries to watch and scan from (GSV_REGISTRIES), with their credentials."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from gsv_pipelines.lib.scanning.registries import (
    RegistryConfig,
    load_registries,
    resolve_credentials,
)
from gsv_pipelines.resources.vault import VaultResource


class RegistriesResource(dg.ConfigurableResource):
    path: str | None = Field(default=None, description="GSV_REGISTRIES; unset: watch nothing")

    def configs(self) -> tuple[RegistryConfig, ...]:
        return load_registries(Path(self.path) if self.path else None)

    def credentials(
        self, config: RegistryConfig, vault: VaultResource | None = None
    ) -> tuple[str, str] | None:
        """(username, password) for `config`, from the environment or Vault; None: anonymous.
        Vault is only contacted when the registry's credentials live there."""

        def read_vault(mount: str, path: str):
            from gsv_pipelines.lib.core import vault_kv

            return vault_kv.read(vault.client(), mount, path).data

        return resolve_credentials(
            config.credentials, read_vault=read_vault if vault is not None else None
        )
