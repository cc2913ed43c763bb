"""``opsflow report monthly`` end to end: stored results of every routine for October 2026 (Europe/Berlin),
rendered to HTML and PDF files, emailed with the PDF attached to a real SMTP server, posted to a Slack
receiver and uploaded to a filesystem storage; a re-run is a new revision (SPEC §1 stakeholder, §5).
Gathering and rendering are tested on their own in tests/test_monthly_gather.py and test_monthly_render.py.
"""

from __future__ import annotations

import email
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from opsflow.cli import run
from opsflow.store import OpsStore
from tests.receiver import HttpReceiver
from tests.test_monthly_gather import save_backups, save_capacity, save_drills, save_expiry, save_quality, save_sla

AS_OF = datetime(2026, 11, 2, 8, tzinfo=UTC)


@pytest.fixture
def month_config(tmp_path: Path, smtp_server: Any, receiver: HttpReceiver) -> Path:
    config = tmp_path / "opsflow.yaml"
    config.write_text(
        "timezone: Europe/Berlin\n"
        f"storages: {{archive: {{type: filesystem, path: '{tmp_path / 'archive'}'}}}}\n"
        "capacity:\n"
        "  - {metric: shop-db-size, source: {type: import}, threshold: 5000, window: 30d}\n"
        "notifications:\n"
        f"  slack: {{webhook_url: '{receiver.url('/slack')}'}}\n"
        f"  email: {{smtp_host: {smtp_server.host}, smtp_port: {smtp_server.port}, starttls: false, "
        "sender: opsflow@example.com, to: [oncall@example.com]}\n"
        "reports:\n"
        f"  monthly: {{to: [cto@example.com], out_dir: '{tmp_path / 'out'}', storage: archive, slack: true}}\n"
    )
    return config


def report(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = run(["report", "monthly", "--month", "2026-10", "--json", "--config", str(config), *args])
    out, err = capsys.readouterr()
    assert out, f"exit {code}: {err}"
    return code, json.loads(out)


def test_the_month_is_rendered_delivered_once_per_channel_and_a_rerun_is_a_new_revision(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    month_config: Path,
    smtp_server: Any,
    receiver: HttpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    for save in (save_sla, save_backups, save_drills, save_capacity, save_quality, save_expiry):
        save(store)
    stored_sla = next(r for r in store.results("sla-report", scope="2026-10"))
    availability = {item.name: item.metrics["availability_pct"] for item in stored_sla.items if item.metrics}

    code, document = report(capsys, month_config)  # files only: nothing sent without --send
    assert code == 0, document
    [item] = document["items"]
    assert [c["check"] for c in item["checks"]] == ["report"]
    html = Path(document["outputs"]["html"]).read_text()
    pdf = Path(document["outputs"]["pdf"]).read_bytes()
    assert pdf.startswith(b"%PDF")
    for value in availability.values():  # the stored figures, to 0.001 points
        if value is not None:
            assert f"{value:.3f}%" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # self-contained
    assert smtp_server.messages == [] and receiver.to("/slack") == []

    code, document = report(capsys, month_config, "--send")
    [item] = document["items"]
    statuses = {c["check"]: c["status"] for c in item["checks"]}
    assert (statuses["email"], statuses["slack"], statuses["storage"]) == ("ok", "ok", "ok")
    assert item["metrics"]["revision"] == 2  # the first run was revision 1: never a silent overwrite
    assert Path(document["outputs"]["html"]).name == "monthly-report-2026-10-r2.html"
    assert "Revision 2" in Path(document["outputs"]["html"]).read_text()
    [mail] = smtp_server.messages  # exactly one email
    message = email.message_from_bytes(mail.data)
    assert mail.recipients == ["cto@example.com"]
    attachments = [part for part in message.walk() if part.get_content_disposition() == "attachment"]
    assert [(part.get_filename(), part.get_content_type()) for part in attachments] == [
        ("monthly-report-2026-10-r2.pdf", "application/pdf")
    ]
    assert attachments[0].get_payload(decode=True).startswith(b"%PDF")
    [posted] = receiver.wait_for("/slack")
    assert "2026-10" in posted.json()["text"]
    uploaded = sorted(p.name for p in (tmp_path / "archive" / "reports" / "monthly").iterdir())
    assert uploaded == ["monthly-report-2026-10-r2.html", "monthly-report-2026-10-r2.pdf"]
    assert len(store.results("monthly-report", scope="2026-10")) == 2


def test_a_month_that_is_not_a_month_is_refused(month_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["report", "monthly", "--month", "2026-13", "--config", str(month_config)]) == 2
    assert "--month: expected YYYY-MM, got '2026-13'" in capsys.readouterr().err
