"""dagster-webserver on 127.0.0.1 over a Dagster instance folder, and GraphQL queries to it: what
the UI reads, read the way the UI reads it."""

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from gsv_pipelines.lib.core.processes import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
GraphQL = Callable[..., dict]

CHECK_PARTITIONS = """
query ($path: [String!]!) {
  assetNodes(assetKeys: [{path: $path}]) {
    assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
      __typename
      ... on AssetCheckDefaultPartitionStatuses { ...Keys }
      ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
      ... on AssetCheckMultiPartitionStatuses { ranges {
        primaryDimStartKey primaryDimEndKey
        secondaryDim { ... on AssetCheckDefaultPartitionStatuses { ...Keys } }
      } }
    } } } }
  }
}
fragment Keys on AssetCheckDefaultPartitionStatuses {
  succeededPartitions failedPartitions inProgressPartitions skippedPartitions
  executionFailedPartitions
}
"""


@contextlib.contextmanager
def webserver(
    home: Path, target: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[GraphQL]:
    """Serve the code location `target` (e.g. ["-w", "workspace.yaml"]) over the instance in
    `home` (with `env` for the code location); yield a function that runs a GraphQL query and
    returns its data."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(home)}
    argv = [sys.executable, "-m", "dagster_webserver", *target, "-h", "127.0.0.1", "-p", str(port)]
    process = ManagedProcess("dagster-webserver", argv, log, env=env, cwd=ROOT).start()
    try:
        process.wait_ready(lambda: requests.get(f"{url}/server_info", timeout=1).ok, timeout=180)

        def graphql(query: str, **variables) -> dict:
            response = requests.post(
                f"{url}/graphql", json={"query": query, "variables": variables}, timeout=300
            )
            response.raise_for_status()
            body = response.json()
            assert not body.get("errors"), body["errors"]
            return body["data"]

        yield graphql
    finally:
        process.stop(timeout=30)


def check_partitions(graphql: GraphQL, asset_path: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per check of the asset: partition keys by status, as the UI's partition bar shows them
    (time ranges and multi-partition ranges expanded to `<start>..<end>` keys)."""
    [node] = graphql(CHECK_PARTITIONS, path=asset_path)["assetNodes"]
    statuses = {}
    for check in node["assetChecksOrError"]["checks"]:
        found: dict[str, list[str]] = {}
        partitions = check["partitionStatuses"] or {}
        if partitions.get("__typename") == "AssetCheckDefaultPartitionStatuses":
            found = _keys(partitions)
        for each in partitions.get("ranges") or []:
            if "status" in each:
                span = _span(each["startKey"], each["endKey"])
                found.setdefault(each["status"].lower(), []).append(span)
                continue
            day = _span(each["primaryDimStartKey"], each["primaryDimEndKey"])
            for status, keys in _keys(each["secondaryDim"]).items():
                found.setdefault(status, []).extend(f"{day}|{key}" for key in keys)
        statuses[check["name"]] = {status: sorted(keys) for status, keys in found.items() if keys}
    return statuses


_STATUS_FIELDS = {
    "succeededPartitions": "succeeded",
    "failedPartitions": "failed",
    "inProgressPartitions": "in_progress",
    "skippedPartitions": "skipped",
    "executionFailedPartitions": "execution_failed",
}


def _keys(statuses: dict) -> dict[str, list[str]]:
    return {
        status: statuses[field] for field, status in _STATUS_FIELDS.items() if field in statuses
    }


def _span(start: str, end: str) -> str:
    return start if start == end else f"{start}..{end}"
