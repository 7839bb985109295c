"""The usage alert policy YAML (`gsv_pipelines/policies/usage.yaml`, overridable by path)."""

from dataclasses import dataclass
from pathlib import Path

from gsv_pipelines.lib.core.policy_file import read_policy
from gsv_pipelines.lib.usage.tables import QUOTA_THRESHOLDS

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "usage.yaml"


class UsagePolicyError(ValueError):
    """The usage policy file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class UsagePolicy:
    max_error_rate: float = 0.05
    min_calls: int = 100
    quota_alert_pct: int = 100


def load_usage_policy(path: str | Path | None = None) -> UsagePolicy:
    """Read and validate the policy at `path` (default: the one shipped in the package)."""
    path = Path(path) if path else DEFAULT_POLICY
    data = read_policy(path, "usage policy", UsagePolicyError)
    if not isinstance(data, dict):
        raise UsagePolicyError(f"usage policy {path} must be a mapping")
    unknown = set(data) - {"max_error_rate", "min_calls", "quota_alert_pct"}
    if unknown:
        raise UsagePolicyError(f"usage policy {path}: unknown key(s) {', '.join(sorted(unknown))}")
    policy = UsagePolicy(**data)
    rate = policy.max_error_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
        raise UsagePolicyError(
            f"usage policy {path}: max_error_rate must be in [0, 1), not {rate!r}"
        )
    calls = policy.min_calls
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise UsagePolicyError(f"usage policy {path}: min_calls must be a positive integer")
    if policy.quota_alert_pct not in QUOTA_THRESHOLDS:
        raise UsagePolicyError(
            f"usage policy {path}: quota_alert_pct must be one of {QUOTA_THRESHOLDS}"
        )
    return policy
