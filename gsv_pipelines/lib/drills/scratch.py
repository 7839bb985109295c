"""Scratch copies made by DR drills and dry runs: their names, their marker, their leftovers.

Every scratch copy (a Qdrant collection, a PostgreSQL database, a SQLite file, an OpenBao server's
folder) is named `gsv_drill_…` and carries a marker (collection metadata, a database comment, a
file beside it) saying which run made it and when. A drill drops its copies when it ends, however
it ends; a run killed outright cannot, so every drill and restore first removes the copies that
have both the prefix and the marker and whose run is no longer in progress (or that are older than
a day, whatever their run's state). Nothing without the marker is ever touched.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PREFIX = "gsv_drill_"
MARKER_KEY = "gsv_drill"
MAX_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class Leftover:
    name: str
    marker: dict[str, Any]


def stamp(now: datetime, run_id: str = "") -> str:
    return now.strftime("%Y%m%dt%H%M%S") + (f"_{run_id[:8]}" if run_id else "")


def scratch_name(template: str, target: str, now: datetime, run_id: str, limit: int) -> str:
    """The scratch copy's name: the template filled in, lowercased and made identifier-safe.

    `limit` is the longest name the system accepts (63 for PostgreSQL); the target's part is
    shortened to fit, never the prefix or the stamp.
    """
    stamp_text = stamp(now, run_id)
    safe_target = re.sub(r"[^a-z0-9_]+", "_", target.lower()).strip("_") or "target"
    room = limit - len(template.format(target="", stamp=stamp_text))
    return template.format(target=safe_target[: max(room, 1)], stamp=stamp_text)


def marker(run_id: str, purpose: str, kind: str, target: str, now: datetime) -> dict[str, Any]:
    """What a scratch copy carries, so that only what a drill made is ever cleaned up."""
    return {
        MARKER_KEY: {
            "run_id": run_id,
            "purpose": purpose,
            "source": f"{kind}/{target}",
            "created_at": now.astimezone(UTC).isoformat(),
        }
    }


def is_leftover(
    name: str,
    found_marker: dict[str, Any] | None,
    active_run_ids: set[str],
    now: datetime,
    max_age: timedelta = MAX_AGE,
) -> bool:
    """A copy to remove: prefixed, marked, and its run gone (or older than `max_age`)."""
    if not name.startswith(PREFIX) or not found_marker or MARKER_KEY not in found_marker:
        return False
    mark = found_marker[MARKER_KEY]
    try:
        created = datetime.fromisoformat(mark["created_at"])
    except (KeyError, TypeError, ValueError):
        return True  # marked by a drill, but unreadably: no run can claim it
    return mark.get("run_id") not in active_run_ids or now - created > max_age
