"""The notifier resource: only the channels that are set, and no unsigned webhook."""

import pytest

from gsv_pipelines.resources.notifier import NotifierError, NotifierResource


def test_only_the_channels_that_are_set_are_used():
    resource = NotifierResource(slack_webhook_url="https://hooks.slack.test/services/T/B/x")
    assert list(resource.channels()) == ["slack"]
    assert NotifierResource().channels() == {}
    both = NotifierResource(webhook_url="https://hook.test/x", webhook_secret="k")
    assert both.channels()["webhook"].secret == "k"


def test_a_webhook_without_its_key_is_refused_without_quoting_the_url():
    resource = NotifierResource(webhook_url="https://hook.test/token-abc")
    with pytest.raises(NotifierError) as error:
        resource.channels()
    assert "GSV_ALERT_WEBHOOK_SECRET" in str(error.value)
    assert "token-abc" not in str(error.value)
    # The URL is not in the channel's repr either (a traceback would print it).
    channel = NotifierResource(webhook_url="https://hook.test/token-abc", webhook_secret="k")
    assert "token-abc" not in repr(channel.channels()["webhook"])
