"""The names other tooling looks up (DESIGN.md: a contract) are exactly those in
tests/data/contract.json: asset keys with their groups, check names per asset, jobs, schedules,
sensors. A rename, removal or addition fails here until the file says so on purpose.

Regenerate the file after an intended change with:
    uv run python -m tests.test_contract > tests/data/contract.json
"""

import json
from pathlib import Path

from gsv_pipelines.definitions import defs as load_defs

CONTRACT = Path(__file__).parent / "data" / "contract.json"


def current() -> dict:
    defs = load_defs()
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "checks": sorted(c.name for c in graph.get_check_keys_for_assets([key])),
        }
    repository = defs.get_repository_def()
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repository.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repository.schedule_defs),
        "sensors": sorted(s.name for s in repository.sensor_defs),
    }


def test_the_contract_names_are_the_committed_ones():
    assert current() == json.loads(CONTRACT.read_text())


if __name__ == "__main__":
    print(json.dumps(current(), indent=2))
