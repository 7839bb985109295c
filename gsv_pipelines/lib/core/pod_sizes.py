"""How big the pod of each heavy step is on Kubernetes: the `dagster-k8s/config` op tag, which
dagster-k8s's `k8s_job_executor` reads for the pod it starts for that step (STYLE.md: Kubernetes
lives in configuration). Locally the tag does nothing. A step without one gets the container
context's defaults (deploy/k8s/deployment.yaml)."""

K8S_CONFIG_TAG = "dagster-k8s/config"


def _pod(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, dict]:
    resources = {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }
    return {K8S_CONFIG_TAG: {"container_config": {"resources": resources}}}


# Trivy unpacks image layers and holds its vulnerability DB in memory.
SCAN = _pod("500m", "1Gi", "2", "4Gi")
# Backups stream in constant memory, but hash and compress every byte: CPU, not memory.
BACKUP = _pod("500m", "512Mi", "2", "2Gi")
# A day of usage events, deduplicated and aggregated in pandas frames.
USAGE_EXTRACT = _pod("500m", "2Gi", "2", "4Gi")
# A drill restores every target into scratch copies (an OpenBao of its own, a scratch database and
# collection) in this pod and compares them with the manifests.
DRILL = _pod("1", "2Gi", "2", "4Gi")
