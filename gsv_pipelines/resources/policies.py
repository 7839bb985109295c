"""The policy YAML files: the shipped defaults, or the operator's copies by path."""

import dagster as dg
from pydantic import Field

from gsv_pipelines.lib.alerts.policy import AlertsPolicy, load_alerts_policy
from gsv_pipelines.lib.backups.policy import BackupPolicy, load_backup_policy
from gsv_pipelines.lib.drills.policy import DrillPolicy, load_drill_policy
from gsv_pipelines.lib.rotation.policy import RotationPolicy, load_rotation_policy
from gsv_pipelines.lib.scanning.policy import ScanPolicy, load_scan_policy
from gsv_pipelines.lib.usage.policy import UsagePolicy, load_usage_policy


class PoliciesResource(dg.ConfigurableResource):
    backup_policy_path: str | None = Field(
        default=None, description="GSV_BACKUP_POLICY; unset: gsv_pipelines/policies/backups.yaml"
    )

    rotation_policy_path: str | None = Field(
        default=None, description="GSV_ROTATION_POLICY; unset: gsv_pipelines/policies/rotation.yaml"
    )

    scan_policy_path: str | None = Field(
        default=None, description="GSV_SCAN_POLICY; unset: gsv_pipelines/policies/scanning.yaml"
    )

    drill_policy_path: str | None = Field(
        default=None, description="GSV_DRILL_POLICY; unset: gsv_pipelines/policies/drills.yaml"
    )

    usage_policy_path: str | None = Field(
        default=None, description="GSV_USAGE_POLICY; unset: gsv_pipelines/policies/usage.yaml"
    )

    alerts_policy_path: str | None = Field(
        default=None, description="GSV_ALERTS_POLICY; unset: gsv_pipelines/policies/alerts.yaml"
    )

    def drills(self) -> DrillPolicy:
        return load_drill_policy(self.drill_policy_path)

    def backups(self) -> BackupPolicy:
        return load_backup_policy(self.backup_policy_path)

    def rotation(self) -> RotationPolicy:
        return load_rotation_policy(self.rotation_policy_path)

    def scanning(self) -> ScanPolicy:
        return load_scan_policy(self.scan_policy_path)

    def usage(self) -> UsagePolicy:
        return load_usage_policy(self.usage_policy_path)

    def alerts(self) -> AlertsPolicy:
        return load_alerts_policy(self.alerts_policy_path)
