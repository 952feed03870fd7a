"""Alerts an operator receives: a webhook (Slack-compatible) and e-mail (SMTP), configured by environment.

| variable                          | meaning                                                              |
|-----------------------------------|----------------------------------------------------------------------|
| STOCK_ASSETS_ALERT_WEBHOOK_URL    | POSTed `{"text": ...}` JSON: a Slack incoming webhook, or any        |
|                                   | receiver that accepts it (Mattermost, Teams workflows, your own)     |
| STOCK_ASSETS_ALERT_SMTP_URL       | `smtp://[user:password@]host[:port]` (STARTTLS when the server       |
|                                   | offers it), or `smtps://...` (TLS from the first byte, port 465)     |
| STOCK_ASSETS_ALERT_EMAIL_TO       | comma-separated recipients (required for e-mail)                     |
| STOCK_ASSETS_ALERT_EMAIL_FROM     | sender (default `stock-assets@<host name>`)                          |

Nothing configured: no alert leaves the machine (the sensors still log every failure in their
tick log). What is sent, by whom:

- a run failed: `run_failure_reporter` (stock_assets/defs/operations/sensors.py), one alert per failed run;
- a blocking check failed on a day, or the daily data is stale (the `daily_partitions` check of
  `stock-assets health`): `data_alert_sensor`, once per new finding (a day that keeps failing is
  not re-sent every tick; a new failing day or a newly stale state is).

Delivery is tried on every configured channel; a channel that fails does not stop the others, and
the sensor's tick fails (so Dagster retries the tick) when no channel delivered. The standard
library does the work (urllib, smtplib): two small POST/SMTP calls do not need a dependency.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

WEBHOOK_URL_ENV = "STOCK_ASSETS_ALERT_WEBHOOK_URL"
SMTP_URL_ENV = "STOCK_ASSETS_ALERT_SMTP_URL"
EMAIL_TO_ENV = "STOCK_ASSETS_ALERT_EMAIL_TO"
EMAIL_FROM_ENV = "STOCK_ASSETS_ALERT_EMAIL_FROM"
TIMEOUT_S = 10

RUN_FAILURE, BLOCKING_CHECK, STALE_DATA = "run_failure", "blocking_check", "stale_data"


class AlertDeliveryError(RuntimeError):
    """No configured channel delivered the alert."""


class AlertConfigError(ValueError):
    """An alert variable is set but cannot be used."""


@dataclass(frozen=True)
class Alert:
    kind: str
    title: str
    text: str

    def as_text(self) -> str:
        return f"[stock_assets] {self.title}\n{self.text}"


@dataclass(frozen=True)
class WebhookChannel:
    url: str
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        body = json.dumps({"text": alert.as_text()}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - operator's URL
                response.read()
        except urllib.error.HTTPError as err:
            raise AlertDeliveryError(f"webhook answered HTTP {err.code}") from err
        except (urllib.error.URLError, OSError) as err:
            raise AlertDeliveryError(f"webhook unreachable: {getattr(err, 'reason', err)}") from err


@dataclass(frozen=True)
class EmailChannel:
    host: str
    port: int
    recipients: tuple[str, ...]
    sender: str
    tls: bool = False  # smtps://: TLS from the first byte
    user: str | None = None
    password: str | None = None
    name: str = "email"

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = f"[stock_assets] {alert.title}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["X-Stock-Assets-Alert"] = alert.kind
        message.set_content(alert.text)
        try:
            if self.tls:
                client = smtplib.SMTP_SSL(self.host, self.port, timeout=TIMEOUT_S,
                                          context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_S)
            with client:
                if not self.tls and client.has_extn("starttls"):
                    client.starttls(context=ssl.create_default_context())
                if self.user:
                    client.login(self.user, self.password or "")
                client.send_message(message)
        except (smtplib.SMTPException, OSError) as err:
            raise AlertDeliveryError(f"e-mail via {self.host}:{self.port} failed: {err}") from err


def configured_channels(environ: dict[str, str] | None = None) -> list[WebhookChannel | EmailChannel]:
    env = os.environ if environ is None else environ
    channels: list[WebhookChannel | EmailChannel] = []
    webhook = env.get(WEBHOOK_URL_ENV, "").strip()
    if webhook:
        if urlsplit(webhook).scheme not in ("http", "https"):
            raise AlertConfigError(f"{WEBHOOK_URL_ENV} must be an http(s):// URL")
        channels.append(WebhookChannel(webhook))
    smtp = env.get(SMTP_URL_ENV, "").strip()
    if smtp:
        parts = urlsplit(smtp)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise AlertConfigError(f"{SMTP_URL_ENV} must look like smtp://[user:password@]host[:port]")
        recipients = tuple(a.strip() for a in env.get(EMAIL_TO_ENV, "").split(",") if a.strip())
        if not recipients:
            raise AlertConfigError(f"{SMTP_URL_ENV} is set but {EMAIL_TO_ENV} names no recipient")
        tls = parts.scheme == "smtps"
        channels.append(EmailChannel(
            host=parts.hostname, port=parts.port or (465 if tls else 25), recipients=recipients,
            sender=env.get(EMAIL_FROM_ENV, "").strip() or f"stock-assets@{socket.gethostname()}", tls=tls,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        ))
    return channels


def send_alert(alert: Alert, channels: list | None = None) -> list[str]:
    """Send on every channel; returns the names of those that delivered. Raises AlertDeliveryError
    when channels are configured and none delivered."""
    channels = configured_channels() if channels is None else channels
    delivered, errors = [], []
    for channel in channels:
        try:
            channel.send(alert)
            delivered.append(channel.name)
        except AlertDeliveryError as err:
            errors.append(str(err))
    if channels and not delivered:
        raise AlertDeliveryError("; ".join(errors))
    return delivered


def data_alerts(daily_partitions) -> dict[str, Alert]:
    """Alerts for the `daily_partitions` health check's findings, keyed by what makes them new
    (a failing day per check; the stale state per last good day)."""
    alerts: dict[str, Alert] = {}
    details = daily_partitions.details or {}
    for check, days in sorted((details.get("failing_blocking_partitions") or {}).items()):
        for day in days:
            alerts[f"{BLOCKING_CHECK}:{check}:{day}"] = Alert(
                BLOCKING_CHECK, f"blocking check {check} failed on {day}",
                f"cleaned_prices {day}: the blocking check {check} failed, so the day did not reach the "
                f"warehouse. Open the asset's Checks tab for the rows, fix the source, re-materialize the day.")
    behind = details.get("sessions_behind")
    if daily_partitions.status == "fail" and behind is not None and not details.get("failing_blocking_partitions"):
        last_good = details.get("last_good_partition")
        alerts[f"{STALE_DATA}:{last_good}"] = Alert(
            STALE_DATA, f"daily data is stale: {behind} NYSE sessions behind",
            daily_partitions.summary + ". Check the daily schedule, the gap sensor and the quote source "
            "(`stock-assets health`).")
    return alerts
