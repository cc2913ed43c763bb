"""expiry-check through ``opsflow run`` on generated certificates (files, a loopback TLS server, an HTTPS
service), dated items in a non-UTC timezone, a real webhook receiver and a Prefect server (SPEC §5
expiry-check). Reading and judging one certificate are tested on their own in tests/test_expiry.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from opsflow.cli import run
from opsflow.store import OpsStore
from tests.receiver import HttpReceiver
from tests.test_notify import latest_artifact
from tests.tls_certs import TestPki, TlsServer, closed_port, issue

ZONE = "Asia/Kathmandu"  # +05:45: a dated item's "end of its day" is not UTC midnight


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create(not_after=datetime.now(UTC) + timedelta(days=3650))


def write_pem(path: Path, days: float) -> Path:
    path.write_bytes(issue(path.stem, datetime.now(UTC) + timedelta(days=days, hours=12)).pem)
    return path


def by_name(document: dict[str, Any]) -> dict[str, tuple[str, Any, str]]:
    return {
        item["name"]: (item["checks"][0]["status"], item["metrics"].get("days_left"), item["checks"][0]["detail"])
        for item in document["items"]
    }


def test_certificates_services_and_dated_items_are_judged_to_the_day(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    pki: TestPki,
    receiver: HttpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    today = datetime.now(ZoneInfo(ZONE)).date()
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    leaf = pki.leaf("localhost", datetime.now(UTC) + timedelta(days=20, hours=12))
    with TlsServer({"localhost": pki.chain_files(tmp_path, leaf)}) as server, closed_port() as nobody:
        config = tmp_path / "opsflow.yaml"
        config.write_text(
            f"timezone: {ZONE}\n"
            "services:\n"
            f"  - {{name: web, url: 'https://localhost:{server.port}/health'}}\n"
            f"notifications: {{webhook: {{url: '{receiver.url('/hook')}'}}}}\n"
            "expiry:\n"
            "  warn_within: 30d\n"
            "  fail_within: 7d\n"
            "  certificates:\n"
            f"    - {{name: soon, file: '{write_pem(tmp_path / 'soon.pem', 3)}'}}\n"
            f"    - {{name: month, file: '{write_pem(tmp_path / 'month.pem', 20)}'}}\n"
            f"    - {{name: later, file: '{write_pem(tmp_path / 'later.pem', 200)}'}}\n"
            f"    - {{name: gone, file: '{write_pem(tmp_path / 'gone.pem', -3)}'}}\n"
            f"    - {{name: junk, file: '{junk}'}}\n"
            f"    - {{name: vpn, tls: '127.0.0.1:{server.port}', server_name: localhost}}\n"
            f"    - {{name: nobody, tls: '127.0.0.1:{nobody}'}}\n"
            "  items:\n"
            f"    - {{name: pagerduty-contract, expires: {today + timedelta(days=5)}, owner: ops@example.com}}\n"
            f"    - {{name: db-license, expires: {today + timedelta(days=25)}, owner: dba@example.com, "
            "kind: license, warn_within: 10d}\n"
            f"    - {{name: domain, expires: {today + timedelta(days=200)}, owner: it@example.com}}\n"
        )
        code = run(["run", "expiry-check", "--json", "--config", str(config)])
    out, err = capsys.readouterr()
    assert out, err
    items = by_name(json.loads(out))
    assert {name: status_days[:2] for name, status_days in items.items()} == {
        "soon": ("fail", 3),
        "month": ("warn", 20),
        "later": ("ok", 200),
        "gone": ("fail", -3),
        "junk": ("error", None),
        "vpn": ("warn", 20),
        "web": ("warn", 20),  # the HTTPS service's certificate, named after the service
        "nobody": ("error", None),  # unreachable after its retries; the others are still judged
        "pagerduty-contract": ("fail", 5),
        "db-license": ("ok", 25),  # its own warn_within: 10d
        "domain": ("ok", 200),
    }
    assert code == 1
    assert "not a PEM or DER certificate" in items["junk"][2]
    assert "chain does not verify: unable to get local issuer certificate" in items["vpn"][2]
    assert "owner ops@example.com" in items["pagerduty-contract"][2]

    # Alerts name the owner; the artifact ranks by days left, expired first.
    posted = " ".join(json.dumps(request.json()) for request in receiver.wait_for("/hook", count=1))
    assert "ops@example.com" in posted
    artifact = latest_artifact("expiry-check")
    assert artifact is not None
    rows = [line.split("|")[1].strip() for line in artifact.data.splitlines() if line.startswith("| ")][1:]
    assert rows.index("gone") < rows.index("soon") < rows.index("pagerduty-contract") < rows.index("month")
    assert [result.status for result in store.results("expiry-check")] == ["error"]
