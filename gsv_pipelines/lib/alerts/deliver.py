"""Delivering alerts to Slack, Teams and a signed webhook, reliably, and never leaking a secret.

One HTTP path for the three channels: requests with urllib3's Retry (timeouts, connection
errors, 5xx and 429 retried with exponential backoff and jitter; any other 4xx not retried: the
request itself is wrong, and sending it again changes nothing). What cannot be delivered becomes
a dead letter in the artefact store, replayed by `gsv alerts replay`.

Webhook URLs are secrets (a Slack or Teams URL carries its token): they appear in no log line,
error message, payload or dead letter; a dead letter names its channel, and a replay posts to the
URL configured then. Every secret the notifier holds is also removed from what it sends.

The webhook channel signs each request: `X-GSV-Signature: sha256=<hex>`, the HMAC-SHA256 with
GSV_ALERT_WEBHOOK_SECRET of `<X-GSV-Timestamp>.<body>`; receivers check it in constant time and
refuse a timestamp more than REPLAY_WINDOW_SECONDS away from their clock (receiver.py).
`X-GSV-Delivery` is unique per message: a retry after a timeout may deliver twice, and a receiver
that remembers delivery ids drops the copy.
"""

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import posixpath
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError
from urllib3.util import Retry

from gsv_pipelines.lib.alerts.messages import RENDERERS, RESOLVED, Alert
from gsv_pipelines.lib.alerts.policy import AlertsPolicy
from gsv_pipelines.lib.core.store import ArtefactStore

SIGNATURE_HEADER = "X-GSV-Signature"
TIMESTAMP_HEADER = "X-GSV-Timestamp"
DELIVERY_HEADER = "X-GSV-Delivery"
REPLAY_WINDOW_SECONDS = 300
# Worth another try: the server is failing or busy (429: Slack's and Teams' rate limits).
RETRY_STATUSES = frozenset({429, *range(500, 600)})
# A Retry-After longer than this is cut to it: a sensor tick cannot wait minutes.
RETRY_AFTER_MAX_SECONDS = 10
DEAD_LETTERS = "alerts/dead-letters"
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Channel:
    name: str
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """What happened to one alert on one channel; `reason` never holds a URL."""

    channel: str
    delivered: bool
    attempts: int
    reason: str
    status: int | None = None
    dead_letter: str | None = None


class _Backoff(Retry):
    """urllib3's Retry, with backoff from the first retry on (urllib3 waits only from the
    second): retry n waits backoff_factor * 2^(n-1), plus up to as much again at random."""

    def get_backoff_time(self) -> float:
        if not self.history:
            return 0.0
        base = self.backoff_factor * 2 ** (len(self.history) - 1)
        return min(self.backoff_max, base + random.random() * base)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-GSV-Signature value of `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def redact(alert: Alert, secrets: list[str]) -> Alert:
    """`alert` with every occurrence of each secret replaced (a description or error that
    quoted a URL, a token)."""
    text = json.dumps(alert.to_dict())
    for secret in secrets:
        text = text.replace(json.dumps(secret)[1:-1], REDACTED)
    return Alert.from_dict(json.loads(text))


def _path(url: str) -> str:
    return urlsplit(url)._replace(scheme="", netloc="").geturl()


def _failure(exc: requests.RequestException) -> str:
    """A request's failure in words that hold no URL (requests' own messages quote it)."""
    cause = exc.args[0] if exc.args else None
    reason = cause.reason if isinstance(cause, MaxRetryError) else cause
    if isinstance(exc, requests.Timeout) or isinstance(
        reason, ReadTimeoutError | ConnectTimeoutError
    ):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


class _Redacting(logging.Filter):
    """On urllib3's connection-pool logger, whose DEBUG lines quote each request's path (a Slack
    or Teams webhook's path is its token): the notifiers' secrets are cut from every record."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in sorted(self.secrets, key=len, reverse=True):
                message = message.replace(secret, REDACTED)
            record.msg, record.args = message, ()
        return True


REDACTING = _Redacting()
logging.getLogger("urllib3.connectionpool").addFilter(REDACTING)


class _Cooldown:
    """Channels (by a fingerprint of their URL) that failed lately, process-wide: sensor ticks
    in the same code server skip them until the cooldown ends, instead of waiting out the
    retries again for every alert."""

    def __init__(self):
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def failing(self, key: str, now: float) -> bool:
        with self._lock:
            return self._until.get(key, 0.0) > now

    def fail(self, key: str, until: float) -> None:
        with self._lock:
            self._until[key] = until

    def clear(self, key: str) -> None:
        with self._lock:
            self._until.pop(key, None)


COOLDOWN = _Cooldown()


class Notifier:
    """Sends each alert to the channels its route names; unset channels only log it."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        policy: AlertsPolicy,
        store: ArtefactStore,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.channels = dict(channels)
        self.policy = policy
        self.store = store
        self.log = log or logging.getLogger(__name__)
        self.clock = clock
        # The URLs, their paths alone (what HTTP logs quote: a path long enough to hold a
        # token), the webhook's key.
        paths = [p for p in (_path(c.url) for c in self.channels.values()) if len(p) >= 16]
        values = [v for c in self.channels.values() for v in (c.url, c.secret) if v] + paths
        self.secrets = sorted(set(values), key=len, reverse=True)
        REDACTING.secrets.update(self.secrets)
        delivery = policy.delivery
        retry = _Backoff(
            total=delivery.retries,
            connect=delivery.retries,
            read=delivery.retries,
            status=delivery.retries,
            other=0,
            redirect=False,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=delivery.backoff_seconds,
            raise_on_status=False,
            respect_retry_after_header=True,
            retry_after_max=RETRY_AFTER_MAX_SECONDS,
        )
        self.session = requests.Session()
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, HTTPAdapter(max_retries=retry))

    def close(self) -> None:
        self.session.close()

    def notify(self, alert: Alert) -> list[Outcome]:
        """Deliver `alert` where the policy routes it; dead-letter what does not get there."""
        alert = redact(alert, self.secrets)
        label = f"{alert.status} {alert.severity} alert {alert.incident}: {alert.title}"
        if alert.status == RESOLVED and not self.policy.recoveries:
            self.log.info(f"{label}: recoveries are off in {self.policy.source}")
            return []
        names = self.policy.channels_for(alert.severity, alert.domains)
        if not names:
            self.log.info(f"{label}: no route of {self.policy.source} matches; logged only")
            return []
        unset = [n for n in names if n not in self.channels]
        outcomes = [Outcome(n, False, 0, "not configured: logged only") for n in unset]
        if unset:
            self.log.info(f"{label}: {', '.join(unset)} not configured; logged only")
        configured = [n for n in names if n in self.channels]
        if configured:
            with ThreadPoolExecutor(max_workers=len(configured)) as pool:
                sent = list(pool.map(lambda n: self.deliver(alert, n), configured))
            for outcome in sent:
                if not outcome.delivered:
                    key = self._dead_letter(alert, outcome)
                    outcome = dataclasses.replace(outcome, dead_letter=key)
                self.log.info(f"{label}: {outcome.channel} {outcome.reason}")
                outcomes.append(outcome)
        return outcomes

    def deliver(self, alert: Alert, name: str) -> Outcome:
        """One attempt (with its retries) to post `alert`, already redacted, to channel `name`."""
        channel = self.channels[name]
        key = hashlib.sha256(channel.url.encode()).hexdigest()[:16]
        if COOLDOWN.failing(key, self.clock()):
            return Outcome(name, False, 0, "skipped: the channel failed lately (cooldown)")
        body = json.dumps(RENDERERS[name](alert), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: uuid.uuid4().hex}
        if channel.secret:
            timestamp = int(self.clock())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign(channel.secret, timestamp, body)
        timeout = self.policy.delivery.timeout_seconds
        try:
            response = self.session.post(
                channel.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            COOLDOWN.fail(key, self.clock() + self.policy.delivery.cooldown_seconds)
            attempts = self.policy.delivery.retries + 1
            return Outcome(name, False, attempts, f"{_failure(exc)} after {attempts} attempt(s)")
        retries = getattr(response.raw, "retries", None)
        attempts = len(retries.history) + 1 if retries is not None else 1
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            COOLDOWN.clear(key)
            return Outcome(name, True, attempts, f"HTTP {status}", status)
        if status in RETRY_STATUSES:
            COOLDOWN.fail(key, self.clock() + self.policy.delivery.cooldown_seconds)
            return Outcome(
                name, False, attempts, f"HTTP {status} after {attempts} attempt(s)", status
            )
        return Outcome(name, False, attempts, f"HTTP {status}: refused, not retried", status)

    def _dead_letter(self, alert: Alert, outcome: Outcome) -> str:
        now = datetime.fromtimestamp(self.clock(), UTC)
        letter_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        key = posixpath.join(DEAD_LETTERS, f"{letter_id}.json")
        self.store.write_json_atomic(
            key,
            {
                "id": letter_id,
                "channel": outcome.channel,
                "failed_at": now.isoformat(),
                "attempts": outcome.attempts,
                "status": outcome.status,
                "reason": outcome.reason,
                "replays": 0,
                "alert": alert.to_dict(),
            },
        )
        return key


def dead_letters(store: ArtefactStore) -> list[dict[str, Any]]:
    """Every dead letter in the store, oldest first."""
    letters = []
    for key in store.glob(posixpath.join(DEAD_LETTERS, "*.json")):
        with contextlib.suppress(FileNotFoundError):  # replayed meanwhile
            letters.append({**store.read_json(key), "key": key})
    return letters


def replay(notifier: Notifier, ids: list[str] | None = None) -> list[tuple[dict, Outcome]]:
    """Send the dead letters (all, or those `ids`) again, each to its own channel. A delivered
    one is deleted; one still undelivered stays, with the new attempt recorded."""
    done = []
    for letter in dead_letters(notifier.store):
        if ids and letter["id"] not in ids:
            continue
        channel = letter["channel"]
        if channel not in notifier.channels:
            outcome = Outcome(channel, False, 0, "not configured now: kept")
        else:
            COOLDOWN.clear(hashlib.sha256(notifier.channels[channel].url.encode()).hexdigest()[:16])
            alert = redact(Alert.from_dict(letter["alert"]), notifier.secrets)
            outcome = notifier.deliver(alert, channel)
        key = letter.pop("key")
        if outcome.delivered:
            notifier.store.delete(key)
        else:
            letter.update(
                replays=letter.get("replays", 0) + 1,
                last_replay_at=datetime.fromtimestamp(notifier.clock(), UTC).isoformat(),
                last_reason=outcome.reason,
            )
            notifier.store.write_json_atomic(key, letter)
        done.append((letter, outcome))
    return done
