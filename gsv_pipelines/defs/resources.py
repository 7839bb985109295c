"""The one place resources are bound. Secrets arrive through dg.EnvVar, resolved at run time."""

import dagster as dg

from gsv_pipelines.lib.core.settings import Settings, load_settings
from gsv_pipelines.resources.kubernetes import KubernetesResource
from gsv_pipelines.resources.notifier import NotifierResource
from gsv_pipelines.resources.policies import PoliciesResource
from gsv_pipelines.resources.qdrant import QdrantResource
from gsv_pipelines.resources.registries import RegistriesResource
from gsv_pipelines.resources.storage import ArtefactStoreResource, DatabaseResource
from gsv_pipelines.resources.trivy import TrivyResource
from gsv_pipelines.resources.vault import VaultResource
from gsv_pipelines.resources.warehouse import WarehouseResource
from gsv_pipelines.resources.workloads import (
    ClusterWorkloadsResource,
    InventoryWorkloadsResource,
)


def _secret(settings: Settings, name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if name in settings.secrets_set else None


def _text(path) -> str | None:
    return str(path) if path else None


@dg.definitions
def resources() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(
        resources={
            "vault": VaultResource(
                addr=settings.vault_addr,
                token=_secret(settings, "VAULT_TOKEN"),
                role_id=_secret(settings, "VAULT_ROLE_ID"),
                secret_id=_secret(settings, "VAULT_SECRET_ID"),
                k8s_role=settings.vault_k8s_role,
            ),
            "qdrant": QdrantResource(
                url=settings.qdrant_url,
                api_key=_secret(settings, "GSV_QDRANT_API_KEY"),
                path=str(settings.qdrant_path),
            ),
            "artefact_store": ArtefactStoreResource(url=settings.store_url),
            "platform_db": DatabaseResource(
                url=_secret(settings, "GSV_PLATFORM_DB_URL") or settings.platform_db_url
            ),
            "warehouse": WarehouseResource(
                url=_secret(settings, "GSV_WAREHOUSE_URL") or settings.warehouse_url
            ),
            "kubernetes": KubernetesResource(),
            # What runs: the cluster's pods in prod, the inventory file locally.
            "workloads": ClusterWorkloadsResource()
            if settings.is_prod
            else InventoryWorkloadsResource(path=str(settings.image_inventory)),
            "trivy": TrivyResource(
                binary=settings.trivy_bin,
                cache_dir=str(settings.trivy_cache_dir),
                db_repository=settings.trivy_db_repository,
                server_url=settings.trivy_server_url,
                server_token=_secret(settings, "GSV_TRIVY_SERVER_TOKEN"),
            ),
            "registries": RegistriesResource(path=_text(settings.registries_file)),
            "policies": PoliciesResource(
                backup_policy_path=_text(settings.backup_policy),
                rotation_policy_path=_text(settings.rotation_policy),
                drill_policy_path=_text(settings.drill_policy),
                scan_policy_path=_text(settings.scan_policy),
                usage_policy_path=_text(settings.usage_policy),
                alerts_policy_path=_text(settings.alerts_policy),
            ),
            "notifier": NotifierResource(
                slack_webhook_url=_secret(settings, "GSV_SLACK_WEBHOOK_URL"),
                teams_webhook_url=_secret(settings, "GSV_TEAMS_WEBHOOK_URL"),
                webhook_url=_secret(settings, "GSV_ALERT_WEBHOOK_URL"),
                webhook_secret=_secret(settings, "GSV_ALERT_WEBHOOK_SECRET"),
                ui_url=settings.ui_url,
            ),
        }
    )
