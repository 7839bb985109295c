"""What runs: the cluster's pods (prod) or an inventory file (local), as deployed images.

Both resources answer `deployed_images()` with the frame of scanning/deployed.py (DEPLOYED_COLUMNS),
and `describe_source()` with a sentence for metadata and reports.
"""

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import pandas as pd


class WorkloadsResource(dg.ConfigurableResource):
    """Where the deployed images come from; bound as `workloads` to one of the two below."""

    @abstractmethod
    def deployed_images(self) -> "pd.DataFrame":
        """One row per (namespace, workload_kind, workload, container, digest)."""

    @abstractmethod
    def describe_source(self) -> str:
        """Where the rows come from, for people."""


class ClusterWorkloadsResource(WorkloadsResource):
    """The Running and Pending pods of the cluster, through the Kubernetes API: the pod's service
    account in the cluster (it needs `list` on pods in every namespace), else the kubeconfig."""

    namespaces: list[str] = Field(
        default_factory=list, description="fnmatch patterns of namespaces to list; empty: all"
    )
    exclude_namespaces: list[str] = Field(
        default_factory=list, description="fnmatch patterns of namespaces to leave out"
    )
    page_size: int = Field(default=500, description="pods per API request (limit/continue)")

    def core_api(self) -> Any:
        """kubernetes' CoreV1Api. Tests subclass this resource and return a fake here."""
        # Imported here: the kubernetes client is slow to import and only this asset's runs use
        # it. The rotation hook's configuration (in-cluster, else kubeconfig) is reused.
        from kubernetes import client

        from gsv_pipelines.lib.rotation.consumers import kubernetes_apis

        custom_api, _ = kubernetes_apis()
        return client.CoreV1Api(custom_api.api_client)

    def deployed_images(self) -> "pd.DataFrame":
        from gsv_pipelines.lib.scanning.deployed import cluster_deployed_images

        return cluster_deployed_images(
            self.core_api(),
            page_size=self.page_size,
            namespaces=self.namespaces,
            exclude_namespaces=self.exclude_namespaces,
        )

    def describe_source(self) -> str:
        scope = f"namespaces {', '.join(self.namespaces)}" if self.namespaces else "all namespaces"
        if self.exclude_namespaces:
            scope += f" except {', '.join(self.exclude_namespaces)}"
        return f"Kubernetes API: Running and Pending pods in {scope}"


class InventoryWorkloadsResource(WorkloadsResource):
    """The inventory file (GSV_IMAGE_INVENTORY; format in lib/scanning/deployed.py and the shipped
    gsv_pipelines/policies/deployed-images.example.yaml). No file: nothing is deployed."""

    path: str = Field(description="GSV_IMAGE_INVENTORY, default $GSV_DATA_DIR/deployed-images.yaml")

    def deployed_images(self) -> "pd.DataFrame":
        from gsv_pipelines.lib.scanning.deployed import (
            DEPLOYED_COLUMNS,
            read_inventory,
            typed_frame,
        )

        if not Path(self.path).exists():
            return typed_frame([], DEPLOYED_COLUMNS)
        return read_inventory(Path(self.path))

    def describe_source(self) -> str:
        if not Path(self.path).exists():
            return f"inventory file {self.path} (absent: no deployed images)"
        return f"inventory file {self.path}"
