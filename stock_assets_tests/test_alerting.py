"""Alerts reach a real webhook receiver (http.server) and a real SMTP server (aiosmtpd), both on loopback."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from aiosmtpd.controller import Controller

from stock_assets.defs.operations import alerting
from stock_assets.defs.operations.alerting import AlertConfigError, AlertDeliveryError, configured_channels
from stock_assets.defs.operations.sensors import evaluate_data_alerts, run_failure_reporter
from stock_assets.health import CheckResult
from stock_assets_tests.test_health import _at, _materialize_days


class _Webhook:
    def __init__(self, status: int = 200) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers["Content-Type"], json.loads(body)))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Mailbox:
    def __init__(self) -> None:
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def receivers(monkeypatch):
    webhook = _Webhook()
    mailbox = _Mailbox()
    with socket.socket() as probe:  # aiosmtpd's controller needs a concrete port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    monkeypatch.setenv(alerting.WEBHOOK_URL_ENV, webhook.url)
    monkeypatch.setenv(alerting.SMTP_URL_ENV, f"smtp://127.0.0.1:{port}")
    monkeypatch.setenv(alerting.EMAIL_TO_ENV, "ops@example.test, oncall@example.test")
    yield webhook, mailbox
    smtp.stop()
    webhook.close()


@dg.op
def _fetch_day() -> None:
    raise ValueError("Yahoo answered 404 for ZZZZ 2020-03-02")


@dg.job(tags={"dagster/partition": "2020-03-02"})
def failing_job() -> None:
    _fetch_day()


def test_a_failed_run_alerts_by_webhook_and_email(receivers):
    webhook, mailbox = receivers
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_reporter", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=failure).for_run_failure()
    run_failure_reporter(context)

    (content_type, body), = webhook.received
    assert content_type == "application/json"
    assert set(body) == {"text"}  # Slack's incoming-webhook shape
    assert "failing_job failed" in body["text"] and "partition 2020-03-02" in body["text"]
    assert "ValueError: Yahoo answered 404 for ZZZZ 2020-03-02" in body["text"]
    (recipients, email), = mailbox.messages
    assert recipients == ["ops@example.test", "oncall@example.test"]
    assert email["Subject"] == "[stock_assets] run of failing_job failed"
    assert email["X-Stock-Assets-Alert"] == "run_failure"
    assert "step _fetch_day: ValueError: Yahoo answered 404" in email.get_payload(decode=True).decode()


def test_stale_data_alerts_once(receivers, database, tmp_path, monkeypatch):
    webhook, mailbox = receivers
    monkeypatch.setenv("STOCK_ASSETS_QUOTE_SOURCE", "yahoo")  # staleness fails only for live data
    instance = dg.DagsterInstance.ephemeral()
    _materialize_days(instance, database.resolved_url, tmp_path, "2020-03-05", "2020-03-06")
    context = dg.build_sensor_context(instance=instance)
    skipped = evaluate_data_alerts(context, _at("2020-03-11", 21))
    assert "1 new alert" in skipped.skip_message
    assert "3 NYSE sessions behind" in webhook.received[0][1]["text"]
    assert mailbox.messages[0][1]["X-Stock-Assets-Alert"] == "stale_data"
    again = evaluate_data_alerts(dg.build_sensor_context(instance=instance, cursor=context.cursor),
                                 _at("2020-03-11", 21))
    assert "0 new alert" in again.skip_message and len(webhook.received) == 1  # not re-sent every tick
    fresh = evaluate_data_alerts(dg.build_sensor_context(instance=instance, cursor=context.cursor),
                                 _at("2020-03-06", 21))
    assert "0 new alert" in fresh.skip_message and fresh.skip_message.count("behind") == 1


def test_a_failed_blocking_check_alerts_each_new_day(receivers):
    webhook, _ = receivers
    result = CheckResult("daily_partitions", "fail", "blocking check(s) failed", {
        "failing_blocking_partitions": {"no_negative_prices": ["2019-11-18"]}, "sessions_behind": 0})
    alerts = alerting.data_alerts(result)
    assert list(alerts) == ["blocking_check:no_negative_prices:2019-11-18"]
    alerting.send_alert(next(iter(alerts.values())))
    assert "no_negative_prices failed on 2019-11-18" in webhook.received[0][1]["text"]


def test_a_broken_channel_does_not_stop_the_other(receivers, monkeypatch):
    _, mailbox = receivers
    monkeypatch.setenv(alerting.WEBHOOK_URL_ENV, "http://127.0.0.1:9/nothing-listens")
    delivered = alerting.send_alert(alerting.Alert("run_failure", "t", "x"))
    assert delivered == ["email"] and len(mailbox.messages) == 1
    monkeypatch.delenv(alerting.SMTP_URL_ENV)
    with pytest.raises(AlertDeliveryError, match="webhook unreachable"):
        alerting.send_alert(alerting.Alert("run_failure", "t", "x"))


def test_misconfiguration_is_named(monkeypatch):
    assert configured_channels({}) == []  # nothing configured: nothing sent
    with pytest.raises(AlertConfigError, match="names no recipient"):
        configured_channels({alerting.SMTP_URL_ENV: "smtp://127.0.0.1:25"})
    with pytest.raises(AlertConfigError, match="http"):
        configured_channels({alerting.WEBHOOK_URL_ENV: "ftp://x"})
    email, = configured_channels({alerting.SMTP_URL_ENV: "smtps://me%40x:p%2Fw@mail.example.test",
                                  alerting.EMAIL_TO_ENV: "a@b"})
    assert (email.port, email.tls, email.user, email.password) == (465, True, "me@x", "p/w")
