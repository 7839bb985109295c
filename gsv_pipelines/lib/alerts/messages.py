"""An alert, independent of where it goes, and its rendering for each channel.

Slack: an incoming-webhook message (Block Kit, with a plain `text` fallback). Teams: a message
with one Adaptive Card (1.4), the form both Teams incoming webhooks and Workflows ("when a Teams
webhook request is received") accept. Webhook: the alert itself as JSON (`version` 1).
"""

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

FIRING = "firing"
RESOLVED = "resolved"
# What one message shows at most: chat clients cut long messages anyway, and a check's
# description can list hundreds of findings.
SUMMARY_CHARS = 1500
FIGURES = 10
FIGURE_CHARS = 120
WEBHOOK_VERSION = 1


@dataclass(frozen=True)
class Alert:
    """One message about one incident: it started (`firing`) or it cleared (`resolved`)."""

    incident: str  # the incident's id: stable for the same job/partition or check/partition
    status: str
    severity: str  # error | warning (policy.SEVERITIES)
    domains: tuple[str, ...]
    title: str
    summary: str
    since: str  # ISO 8601 (UTC): when the incident started
    at: str  # ISO 8601 (UTC): when what this message reports happened
    subject: dict[str, Any]  # kind (run | check), job or asset + check, partition
    figures: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["domains"] = list(self.domains)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Alert":
        return cls(**{**data, "domains": tuple(data.get("domains", ()))})


def clip(text: str, limit: int) -> str:
    text = str(text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def figures(values: dict[str, Any]) -> dict[str, Any]:
    """At most FIGURES figures, texts clipped; numbers stay numbers."""
    kept = {}
    for name, value in list(values.items())[:FIGURES]:
        text = " ".join(str(value).split())
        kept[name] = value if isinstance(value, int | float) else clip(text, FIGURE_CHARS)
    return kept


def run_link(ui_url: str, run_id: str) -> str:
    return f"{ui_url}/runs/{run_id}"


def asset_link(ui_url: str, asset: str, check: str | None = None, partition: str | None = None):
    """The asset's page in the Dagster UI: its check's detail, or its partition."""
    path = "/".join(quote(part, safe="") for part in asset.split("/"))
    if check:
        query = {"view": "checks", "checkDetail": check}
    elif partition:
        query = {"view": "partitions", "partition": partition}
    else:
        query = {}
    return f"{ui_url}/assets/{path}" + (f"?{urlencode(query)}" if query else "")


def _label(alert: Alert) -> str:
    word = "RESOLVED" if alert.status == RESOLVED else alert.severity.upper()
    return f"[{word}] {alert.title}"


def _facts(alert: Alert) -> list[tuple[str, str]]:
    facts = [("since", alert.since), ("severity", alert.severity)]
    if alert.domains:
        facts.append(("domain", ", ".join(alert.domains)))
    if alert.subject.get("partition"):
        facts.append(("partition", str(alert.subject["partition"])))
    return facts + [(name, str(value)) for name, value in alert.figures.items()]


def slack_payload(alert: Alert) -> dict[str, Any]:
    links = " · ".join(f"<{url}|{name}>" for name, url in alert.links.items())
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in _facts(alert)][:10]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(_label(alert), 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(alert.summary, 3000) or "-"}},
        {"type": "section", "fields": fields},
    ]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    return {"text": f"{_label(alert)}: {clip(alert.summary, 300)}", "blocks": blocks}


def teams_payload(alert: Alert) -> dict[str, Any]:
    color = (
        "Good"
        if alert.status == RESOLVED
        else {"error": "Attention"}.get(alert.severity, "Warning")
    )
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _label(alert),
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {"type": "TextBlock", "text": alert.summary or "-", "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(alert)]},
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": f"Open {name} in Dagster", "url": url}
            for name, url in alert.links.items()
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def webhook_payload(alert: Alert) -> dict[str, Any]:
    return {"version": WEBHOOK_VERSION, **alert.to_dict()}


RENDERERS = {"slack": slack_payload, "teams": teams_payload, "webhook": webhook_payload}
