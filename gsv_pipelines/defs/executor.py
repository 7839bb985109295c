"""How a run executes its steps. In prod each step runs in a Kubernetes Job of its own
(dagster-k8s's `k8s_job_executor`, inheriting the K8sRunLauncher's image, env and secrets; RBAC in
deploy/k8s/rbac-step-jobs.yaml), so one run's heavy steps spread over the cluster; locally
Dagster's default (a process per step). A job may choose its own: image_scan_job runs its three
short steps in the run's process (scanning/jobs.py). Steps hand no values to each other (every
asset writes its own store and returns metadata only), so step pods need no shared IO-manager
storage."""

import dagster as dg

from gsv_pipelines.lib.core.settings import load_settings


@dg.definitions
def executor() -> dg.Definitions:
    if not load_settings().is_prod:
        return dg.Definitions()
    # Imported in prod only: it loads the Kubernetes client, which local loads do without.
    from dagster_k8s import k8s_job_executor

    return dg.Definitions(executor=k8s_job_executor)
