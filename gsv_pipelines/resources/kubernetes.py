"""The Kubernetes API, for what a rotation must nudge (ExternalSecrets, Deployments)."""

from typing import Any

import dagster as dg


class KubernetesResource(dg.ConfigurableResource):
    """In-cluster service account credentials, else the kubeconfig (KUBECONFIG)."""

    def apis(self) -> tuple[Any, Any]:
        """(CustomObjectsApi, AppsV1Api)."""
        # Imported here: the kubernetes client is slow to import and only rotations use it.
        from gsv_pipelines.lib.rotation.consumers import kubernetes_apis

        return kubernetes_apis()
