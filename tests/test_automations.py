"""deployments/automations.py against the session's Prefect test server.

Its ReactiveTriggers and Actions services do the real work: a flow run's state
event fires the automation, and the server posts through the notification
blocks to the loopback ``receiver``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed, Late

from deployments.automations import (
    FAILED_AUTOMATION,
    LATE_AUTOMATION,
    AppliedAutomations,
    apply_automations,
)
from opsflow.cli import run
from opsflow.config import Config, parse_config
from tests.receiver import HttpReceiver, ReceivedRequest

pytestmark = pytest.mark.usefixtures("prefect_api")

SLACK_PATH = "/services/T000/B000/SECRETTOKEN"
WEBHOOK_PATH = "/hooks/SECRETHOOK"
PAGERDUTY_PATH = "/v2/enqueue"
ROUTING_KEY = "R0UTINGKEYSECRET0000000000000000"
WEBHOOK_TOKEN = "Bearer WEBHOOKTOKENSECRET"
SECRETS = ("SECRETTOKEN", "SECRETHOOK", ROUTING_KEY, "WEBHOOKTOKENSECRET")
# The actions service acts within seconds; generous for a loaded CI machine.
NOTIFY_TIMEOUT = 60.0

CHANNELS_YAML = """
notifications:
  slack: {webhook_url: {secret: opsflow-test-slack-url}}
  webhook: {url: "${HOOK_URL}", headers: {Authorization: "${HOOK_TOKEN}"}}
  pagerduty: {routing_key: "${PD_KEY}", events_url: "${PD_URL}"}
  email: {smtp_host: smtp.example.com, sender: ops@example.com}
"""


def channels_config(receiver: HttpReceiver) -> Config:
    # The Slack URL through a Prefect Secret block, the others from the environment.
    Secret(value=receiver.url(SLACK_PATH)).save("opsflow-test-slack-url", overwrite=True)
    environ = {
        "HOOK_URL": receiver.url(WEBHOOK_PATH),
        "HOOK_TOKEN": WEBHOOK_TOKEN,
        "PD_KEY": ROUTING_KEY,
        "PD_URL": receiver.url(PAGERDUTY_PATH),
    }
    return parse_config(CHANNELS_YAML, environ=environ)


@pytest.fixture
def applied(receiver: HttpReceiver) -> Iterator[AppliedAutomations]:
    """The automations applied for Slack, webhook and PagerDuty at ``receiver``; removed afterwards
    (the Prefect server is the session's: later tests' failing flows must not notify)."""
    try:
        yield apply_automations(channels_config(receiver))
    finally:
        apply_automations(Config.empty())


def wait_for_run(receiver: HttpReceiver, path: str, flow_run_id: uuid.UUID, flow_run_name: str) -> ReceivedRequest:
    """The first request to ``path`` about this flow run (another run's notification may arrive too)."""
    deadline = time.monotonic() + NOTIFY_TIMEOUT
    seen = 0
    while time.monotonic() < deadline:
        requests = receiver.wait_for(path, seen + 1, timeout=deadline - time.monotonic())
        for request in requests:
            text = request.body.decode()
            if flow_run_name in text or str(flow_run_id) in text:
                return request
        seen = len(requests)
    raise AssertionError(f"no notification about {flow_run_name} reached {path} within {NOTIFY_TIMEOUT}s")


@flow(name="opsflow-test-failing-routine")
def failing_routine() -> None:
    raise RuntimeError("backup bucket unreachable")


@flow(name="opsflow-test-routine")
def quiet_routine() -> None:
    pass


def test_failed_flow_run_notifies_every_channel(applied: AppliedAutomations, receiver: HttpReceiver) -> None:
    state = failing_routine(return_state=True)
    ended = time.monotonic()
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)

    slack = wait_for_run(receiver, SLACK_PATH, flow_run_id, flow_run.name).json()
    webhook = wait_for_run(receiver, WEBHOOK_PATH, flow_run_id, flow_run.name)
    pagerduty = wait_for_run(receiver, PAGERDUTY_PATH, flow_run_id, flow_run.name).json()
    print(f"notifications of a failed flow run arrived within {time.monotonic() - ended:.1f}s of its end")

    assert slack["text"] == f"Prefect flow run {flow_run.name} of opsflow-test-failing-routine is Failed"
    assert "backup bucket unreachable" in slack["attachments"][0]["text"]

    assert webhook.headers["Authorization"] == WEBHOOK_TOKEN
    assert webhook.headers["Content-Type"] == "application/json"
    document = webhook.json()
    assert document["event"] == "prefect.flow-run.Failed"
    assert document["automation"] == FAILED_AUTOMATION
    assert document["flow"]["name"] == "opsflow-test-failing-routine"
    assert document["flow_run"] == {"id": str(flow_run_id), "name": flow_run.name, "url": document["flow_run"]["url"]}
    assert document["state"]["type"] == "FAILED"
    assert document["state"]["name"] == "Failed"
    assert "backup bucket unreachable" in document["state"]["message"]
    assert document["deployment"] is None

    assert pagerduty["routing_key"] == ROUTING_KEY
    assert pagerduty["event_action"] == "trigger"
    assert pagerduty["dedup_key"] == f"prefect-flow-run-{flow_run_id}"
    assert pagerduty["payload"]["severity"] == "critical"
    assert pagerduty["payload"]["summary"].startswith(f"opsflow-test-failing-routine/{flow_run.name} is Failed")


KILLED_ROUTINE = """
import time
from prefect import flow, runtime

@flow(name="opsflow-test-killed-routine")
def stuck():
    print(runtime.flow_run.id, runtime.flow_run.name, flush=True)
    time.sleep(120)

stuck()
"""


def test_a_routine_killed_mid_run_notifies(applied: AppliedAutomations, receiver: HttpReceiver, tmp_path: Path) -> None:
    # SIGTERM (what a worker, systemd or Kubernetes sends) to a running flow: the
    # engine reports Crashed, and the server, not our code, sends the alert.
    environ = os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    stderr = tmp_path / "routine.stderr"
    with (
        stderr.open("wb") as log,
        subprocess.Popen(
            [sys.executable, "-c", KILLED_ROUTINE], stdout=subprocess.PIPE, stderr=log, env=environ, text=True
        ) as routine,
    ):
        try:
            assert routine.stdout is not None
            started = routine.stdout.readline()  # the flow is running
            assert started, stderr.read_text()
            flow_run_id, flow_run_name = started.split()
            routine.send_signal(signal.SIGTERM)
            routine.wait(timeout=60)
        finally:
            routine.kill()
    assert routine.returncode != 0, stderr.read_text()

    slack = wait_for_run(receiver, SLACK_PATH, uuid.UUID(flow_run_id), flow_run_name).json()
    assert slack["text"] == f"Prefect flow run {flow_run_name} of opsflow-test-killed-routine is Crashed"
    document = wait_for_run(receiver, WEBHOOK_PATH, uuid.UUID(flow_run_id), flow_run_name).json()
    assert document["state"]["type"] == "CRASHED"
    assert document["event"] == "prefect.flow-run.Crashed"


def test_late_scheduled_run_notifies(applied: AppliedAutomations, receiver: HttpReceiver) -> None:
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(quiet_routine)
        client.set_flow_run_state(flow_run.id, Late(), force=True)

    slack = wait_for_run(receiver, SLACK_PATH, flow_run.id, flow_run.name).json()
    assert slack["text"].endswith("is Late")
    assert "has not started" in slack["attachments"][0]["text"]
    document = wait_for_run(receiver, WEBHOOK_PATH, flow_run.id, flow_run.name).json()
    assert document["automation"] == LATE_AUTOMATION
    assert document["event"] == "prefect.flow-run.Late"


def test_applying_twice_updates_in_place(receiver: HttpReceiver) -> None:
    config = channels_config(receiver)
    try:
        first = apply_automations(config)
        second = apply_automations(config)
        assert second.blocks == first.blocks
        assert second.automations == first.automations
        assert first.skipped == {"email": "Prefect has no SMTP notification block"}
        with get_client(sync_client=True) as client:
            for name in (FAILED_AUTOMATION, LATE_AUTOMATION):
                (automation,) = client.read_automations_by_name(name)
                assert [action.block_document_id for action in automation.actions] == list(first.blocks.values())
            names = [document.name for document in client.read_block_documents(include_secrets=False)]
        # Blocks the session's other tests saved on this server (``opsflow-test-*``) are not ours to count.
        ours = sorted(name for name in names if name.startswith("opsflow-") and not name.startswith("opsflow-test-"))
        assert ours == [
            "opsflow-pagerduty",
            "opsflow-slack",
            "opsflow-webhook",
        ]

        # The updated automation still fires.
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run(quiet_routine)
            client.set_flow_run_state(flow_run.id, Crashed(), force=True)
        wait_for_run(receiver, SLACK_PATH, flow_run.id, flow_run.name)
    finally:
        apply_automations(Config.empty())


def test_a_channel_removed_from_the_config_loses_its_block(receiver: HttpReceiver) -> None:
    environ = {"URL": receiver.url(WEBHOOK_PATH)}
    try:
        apply_automations(channels_config(receiver))
        applied = apply_automations(parse_config('notifications: {webhook: {url: "${URL}"}}', environ=environ))
        assert list(applied.blocks) == ["opsflow-webhook"]
        assert "notification block opsflow-slack (custom-webhook)" in applied.removed
        with get_client(sync_client=True) as client:
            (automation,) = client.read_automations_by_name(FAILED_AUTOMATION)
            assert [action.block_document_id for action in automation.actions] == [applied.blocks["opsflow-webhook"]]
    finally:
        apply_automations(Config.empty())


def test_secrets_stay_in_the_blocks(
    receiver: HttpReceiver, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prefect_logger = logging.getLogger("prefect")  # Prefect's loggers do not propagate to the root
    prefect_logger.addHandler(caplog.handler)
    try:
        applied = apply_automations(channels_config(receiver))
        print(applied.summary())
        with get_client(sync_client=True) as client:
            definitions = [
                client.request("GET", "/automations/{id}", path_params={"id": automation_id}).text
                for automation_id in applied.automations.values()
            ]
            documents = [
                client.request("GET", "/block_documents/{id}", path_params={"id": block_id}).text
                for block_id in applied.blocks.values()
            ]
    finally:
        prefect_logger.removeHandler(caplog.handler)
        apply_automations(Config.empty())

    out, err = capsys.readouterr()
    exposed = {"stdout": out, "stderr": err, "logs": caplog.text, "automations": "".join(definitions)}
    exposed["block documents (read without secrets)"] = "".join(documents)
    assert "opsflow-slack" in out  # something was printed
    assert "opsflow-slack" in caplog.text  # and logged
    for where, text in exposed.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}"
    for definition in definitions:  # the blocks are referenced by id
        actions = json.loads(definition)["actions"]
        assert {action["block_document_id"] for action in actions} == {str(i) for i in applied.blocks.values()}


# SlackWebhook builds an Apprise client on construction; Apprise's plugin loader
# imports the stdlib ``imghdr`` (apprise/utils/pgp.py), deprecated since Python 3.11.
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_a_slack_hosted_webhook_uses_prefects_slack_block() -> None:
    config = parse_config(
        "notifications: {slack: {webhook_url: 'https://hooks.slack.com/services/T000/B000/SECRETTOKEN'}}"
    )
    try:
        applied = apply_automations(config)
        with get_client(sync_client=True) as client:
            document = client.read_block_document(applied.blocks["opsflow-slack"], include_secrets=False)
        assert document.block_type is not None
        assert document.block_type.slug == "slack-webhook"
        assert "SECRETTOKEN" not in json.dumps(document.data)
    finally:
        apply_automations(Config.empty())


def test_no_channel_no_automation(receiver: HttpReceiver) -> None:
    no_channel = parse_config("notifications: {}")
    applied = apply_automations(no_channel)
    assert applied.automations == {}
    assert applied.blocks == {}
    assert applied.removed == []
    assert "no notification channel for Prefect to carry: no automation applied" in applied.summary()
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(FAILED_AUTOMATION) == []
        assert client.read_automations_by_name(LATE_AUTOMATION) == []

    # Channels dropped from the config: what an earlier apply left is taken down.
    apply_automations(channels_config(receiver))
    assert apply_automations(no_channel).removed == [
        f"automation {FAILED_AUTOMATION!r}",
        f"automation {LATE_AUTOMATION!r}",
        "notification block opsflow-slack (custom-webhook)",
        "notification block opsflow-webhook (custom-webhook)",
        "notification block opsflow-pagerduty (custom-webhook)",
    ]
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(FAILED_AUTOMATION) == []


def test_command_line_prints_each_line_once(receiver: HttpReceiver, tmp_path: Path) -> None:
    config = tmp_path / "opsflow.yaml"
    config.write_text(f"notifications: {{webhook: {{url: '{receiver.url(WEBHOOK_PATH)}'}}}}\n")
    environ = os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "opsflow", "automations", "apply", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # what a terminal shows: stdout and the logs together
            env=environ,
            text=True,
            timeout=120,
        )
    finally:
        apply_automations(Config.empty())
    assert done.returncode == 0, done.stdout
    assert "notification block opsflow-webhook" in done.stdout and FAILED_AUTOMATION in done.stdout
    summary = [line for line in done.stdout.splitlines() if line.startswith(("notification block ", "automation "))]
    assert len(summary) == 3, done.stdout  # the webhook's block and the two automations
    for line in summary:
        assert done.stdout.count(line) == 1, done.stdout  # not again in a log record


def test_command_line(prefect_api: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "opsflow.yaml"
    config.write_text("notifications: {}\n")
    assert run(["automations", "apply", "--config", str(config)]) == 0
    assert "no automation applied" in capsys.readouterr().out
    config.write_text("notifications: {slack: {webhook_url: not-a-url}}\n")
    assert run(["automations", "apply", "--config", str(config)]) == 2
    assert "notifications.slack.webhook_url" in capsys.readouterr().err
