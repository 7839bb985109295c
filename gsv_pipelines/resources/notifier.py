"""Where alerts go: Slack, Microsoft Teams and a signed webhook (gsv_pipelines/lib/alerts/)."""

import logging

import dagster as dg
from pydantic import Field

from gsv_pipelines.lib.alerts.deliver import Channel, Notifier
from gsv_pipelines.lib.alerts.policy import AlertsPolicy
from gsv_pipelines.lib.core.store import ArtefactStore


class NotifierError(ValueError):
    """The channels are configured in a way that cannot work; the message says how."""


class NotifierResource(dg.ConfigurableResource):
    """The three channels. Their URLs carry tokens, so each is bound from its environment
    variable as a secret; a channel left unset only logs its alerts."""

    slack_webhook_url: str | None = Field(
        default=None, description="GSV_SLACK_WEBHOOK_URL: a Slack incoming-webhook URL"
    )
    teams_webhook_url: str | None = Field(
        default=None, description="GSV_TEAMS_WEBHOOK_URL: a Teams incoming or Workflows webhook URL"
    )
    webhook_url: str | None = Field(
        default=None, description="GSV_ALERT_WEBHOOK_URL: any HTTPS endpoint, sent signed JSON"
    )
    webhook_secret: str | None = Field(
        default=None, description="GSV_ALERT_WEBHOOK_SECRET: the webhook's HMAC-SHA256 key"
    )
    ui_url: str = Field(default="http://127.0.0.1:3000", description="GSV_UI_URL, for links")

    def channels(self) -> dict[str, Channel]:
        if self.webhook_url and not self.webhook_secret:
            raise NotifierError(
                "GSV_ALERT_WEBHOOK_URL is set but GSV_ALERT_WEBHOOK_SECRET is not: the webhook "
                "channel signs every message; set both, or neither"
            )
        channels = {
            "slack": Channel("slack", self.slack_webhook_url) if self.slack_webhook_url else None,
            "teams": Channel("teams", self.teams_webhook_url) if self.teams_webhook_url else None,
            "webhook": Channel("webhook", self.webhook_url, self.webhook_secret)
            if self.webhook_url
            else None,
        }
        return {name: channel for name, channel in channels.items() if channel}

    def notifier(
        self, policy: AlertsPolicy, store: ArtefactStore, log: logging.Logger | None = None
    ) -> Notifier:
        return Notifier(self.channels(), policy, store, log=log)
