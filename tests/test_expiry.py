"""The expiry engine (SPEC §5 expiry-check): certificates from files and loopback TLS servers, dated items.

Certificates are generated (a test CA and intermediate, ``tests/tls_certs.py``) with ``not_after`` set
to an instant, so ``days_left`` is checked to the day and every status exactly.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from opsflow.config import Config, DatedItem
from opsflow.errors import PermanentFailure, TransientFailure
from opsflow.results import Item
from tasks.expiry import (
    CERTIFICATE_TASK_RUNS,
    MAX_FILE_BYTES,
    CertificateTarget,
    batch_label,
    certificate_batches,
    certificate_item,
    certificate_targets,
    check_certificate,
    check_certificates,
    dated_item,
    dated_items,
    expiry_status,
    read_certificate_file,
    read_endpoint_chain,
)
from tests.tls_certs import TestPki, TlsServer, closed_port, issue, self_signed_files

DAY = 86400.0
WARN, FAIL = 30 * DAY, 7 * DAY
# A fixed instant for what needs no server; certificates keep whole seconds, so days are exact.
NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)


def real_now() -> datetime:
    """For the TLS servers: the client judges at the real clock."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def pki() -> TestPki:
    return TestPki.create(not_after=NOW + timedelta(days=3650))


def file_target(name: str, path: Path, warn: float = WARN, fail: float = FAIL) -> CertificateTarget:
    return CertificateTarget(name, "file", warn, fail, file=str(path))


def tls_target(name: str, port: int, server_name: str | None = "localhost") -> CertificateTarget:
    return CertificateTarget(name, "tls", WARN, FAIL, host="127.0.0.1", port=port, server_name=server_name, timeout=5)


def expiry(item: Item) -> tuple[str, int | None, str]:
    check = item.check_named("expiry")
    assert check is not None
    return check.status, item.metrics.get("days_left"), check.detail


# -- judging --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_left", "status"),
    [(-400, "fail"), (-1, "fail"), (0, "fail"), (7, "fail"), (8, "warn"), (30, "warn"), (31, "ok"), (200, "ok")],
)
def test_expiry_status_at_its_boundaries(days_left: int, status: str) -> None:
    assert expiry_status(days_left, 30, 7) == status


def test_expired_is_fail_even_with_no_fail_window() -> None:
    assert expiry_status(-1, 30, 0) == "fail"
    assert expiry_status(0, 30, 0) == "fail"  # fail_within 0 still fails on its last day: 0 <= 0
    assert expiry_status(1, 0, 0) == "ok"


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "status", "days_left", "words"),
    [
        (timedelta(days=3, hours=5), "fail", 3, "expires in 3 days (2026-12-08)"),
        (timedelta(days=20, hours=17, minutes=59), "warn", 20, "expires in 20 days (2026-12-25)"),
        (timedelta(days=200, seconds=1), "ok", 200, "expires in 200 days (2027-06-23)"),
        (-timedelta(days=2, hours=1), "fail", -3, "expired 2 days ago (2026-12-03)"),
        (-timedelta(seconds=1), "fail", -1, "expired less than a day ago (2026-12-05)"),
    ],
)
def test_certificate_files_are_judged_to_the_day(
    tmp_path: Path, pki: TestPki, lifetime: timedelta, status: str, days_left: int, words: str
) -> None:
    leaf = pki.leaf("app.example.test", NOW + lifetime)
    path = tmp_path / "app.pem"
    path.write_bytes(leaf.pem)
    item = check_certificate(file_target("app-cert", path), NOW)
    assert item.name == "app-cert"
    assert item.status == status
    assert expiry(item) == (status, days_left, words)
    metrics = item.metrics
    assert metrics["source"] == "file"
    assert metrics["expires_at"] == (NOW + lifetime).isoformat().replace("+00:00", "Z")
    assert metrics["subject"] == "CN=app.example.test"
    assert metrics["issuer"] == "CN=opsflow test intermediate"
    assert metrics["serial"] == format(leaf.cert.serial_number, "X")
    assert metrics["not_before"] == leaf.cert.not_valid_before_utc.isoformat().replace("+00:00", "Z")


def test_a_der_file_is_read(tmp_path: Path, pki: TestPki) -> None:
    leaf = pki.leaf("der.example.test", NOW + timedelta(days=45))
    path = tmp_path / "cert.der"
    path.write_bytes(leaf.der)
    (cert,) = read_certificate_file(path)
    assert cert == leaf.cert
    assert expiry(check_certificate(file_target("der", path), NOW))[:2] == ("ok", 45)


def test_a_pem_bundle_is_judged_by_its_soonest_certificate_and_names_it(tmp_path: Path) -> None:
    short_pki = TestPki.create(NOW + timedelta(days=3650), intermediate_not_after=NOW + timedelta(days=3, hours=2))
    leaf = short_pki.leaf("bundle.example.test", NOW + timedelta(days=200, hours=2))
    path = tmp_path / "fullchain.pem"
    # Text around the blocks (as openssl writes it) and a key in the same file are passed over.
    path.write_bytes(b"subject=CN=bundle\n" + leaf.pem + leaf.key_pem + short_pki.intermediate.pem)
    assert len(read_certificate_file(path)) == 2
    item = check_certificate(file_target("bundle", path), NOW)
    status, days_left, detail = expiry(item)
    assert (status, days_left) == ("fail", 3)
    assert detail == "CN=opsflow test intermediate (certificate 2 of 2 in the file) expires in 3 days (2026-12-08)"
    assert item.metrics["subject"] == "CN=opsflow test intermediate"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, I am not a certificate\n", "not a PEM or DER certificate"),
        (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "not a PEM or DER certificate"),
        (b"\x30\x82\x01\x00garbage", "not a PEM or DER certificate"),
        (b"", "not a PEM or DER certificate"),
        (b"0" * (MAX_FILE_BYTES + 1), "larger than 1 MiB"),
    ],
)
def test_a_file_that_is_not_a_certificate_is_refused_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "notes.pem"
    path.write_bytes(content)
    with pytest.raises(PermanentFailure, match=message) as raised:
        read_certificate_file(path)
    assert str(path) in str(raised.value)


def test_a_missing_file_or_a_directory_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure, match="no such file"):
        read_certificate_file(tmp_path / "absent.pem")
    with pytest.raises(PermanentFailure, match="a directory"):
        read_certificate_file(tmp_path)


# -- chains ---------------------------------------------------------------------------------------


def test_a_chain_certificate_expiring_before_the_leaf_is_a_finding_that_sets_the_status(pki: TestPki) -> None:
    short = TestPki.create(NOW + timedelta(days=3650), intermediate_not_after=NOW + timedelta(days=20, hours=1))
    leaf = short.leaf("chain.example.test", NOW + timedelta(days=90, hours=1))
    item = certificate_item("web", [leaf.cert, short.intermediate.cert], "tls", NOW, WARN, FAIL)
    status, days_left, detail = expiry(item)
    assert (status, days_left) == ("warn", 90)  # days_left is the leaf's; the status the intermediate's
    assert detail == (
        "expires in 90 days (2027-03-05); CN=opsflow test intermediate in the chain expires before it: "
        "expires in 20 days (2026-12-25), which makes this check warn"
    )
    assert item.metrics["subject"] == "CN=chain.example.test"
    # a chain certificate expiring after the leaf is no finding
    later = certificate_item("web", [leaf.cert, pki.intermediate.cert], "tls", NOW, WARN, FAIL)
    assert expiry(later) == ("ok", 90, "expires in 90 days (2027-03-05)")


def test_dates_in_details_are_read_in_the_config_timezone(pki: TestPki) -> None:
    from zoneinfo import ZoneInfo

    leaf = pki.leaf("late.example.test", datetime(2026, 12, 25, 20, 0, tzinfo=UTC))
    item = certificate_item("late", [leaf.cert], "tls", NOW, WARN, FAIL, zone=ZoneInfo("Asia/Kathmandu"))
    assert expiry(item) == ("warn", 20, "expires in 20 days (2026-12-26)")  # 01:45 the next day there
    assert item.metrics["expires_at"] == "2026-12-25T20:00:00Z"


# -- loopback TLS servers -------------------------------------------------------------------------


def test_a_verified_chain_is_read_from_a_loopback_server(tmp_path: Path, pki: TestPki) -> None:
    now = real_now()
    leaf = pki.leaf("localhost", now + timedelta(days=20, hours=12))
    with TlsServer({"localhost": pki.chain_files(tmp_path, leaf)}) as server:
        read = read_endpoint_chain("127.0.0.1", server.port, "localhost", timeout=5, verify_context=pki.trust())
        item = check_certificate(tls_target("api", server.port), now, verify_context=pki.trust())
    assert read.verify_error is None
    assert read.leaf == leaf.cert
    assert read.chain == [leaf.cert, pki.intermediate.cert]
    status, days_left, detail = expiry(item)
    assert (status, days_left) == ("warn", 20)
    assert "verify" not in detail
    assert item.metrics["source"] == "tls"
    assert item.metrics["serial"] == format(leaf.cert.serial_number, "X")


def test_a_self_signed_certificate_is_read_and_its_verification_problem_is_a_detail(tmp_path: Path) -> None:
    now = real_now()
    files = self_signed_files(tmp_path, "localhost", now + timedelta(days=3, hours=12))
    with TlsServer({"localhost": files}) as server:
        read = read_endpoint_chain("127.0.0.1", server.port, "localhost", timeout=5)
        item = check_certificate(tls_target("self", server.port), now)
    assert read.verify_error == "self-signed certificate"
    status, days_left, detail = expiry(item)
    assert (status, days_left) == ("fail", 3)
    assert detail.endswith("; chain does not verify: self-signed certificate")
    assert detail.startswith("expires in 3 days (")


def test_an_untrusted_chain_and_a_name_mismatch_are_details(tmp_path: Path, pki: TestPki) -> None:
    now = real_now()
    leaf = pki.leaf("localhost", now + timedelta(days=200, hours=12))
    with TlsServer({"localhost": pki.chain_files(tmp_path, leaf)}) as server:
        untrusted = read_endpoint_chain("127.0.0.1", server.port, "localhost", timeout=5)
        mismatch = read_endpoint_chain("127.0.0.1", server.port, "other.test", 5, verify_context=pki.trust())
    assert untrusted.verify_error == "unable to get local issuer certificate"
    assert mismatch.verify_error is not None
    assert "Hostname mismatch" in mismatch.verify_error
    assert untrusted.leaf == mismatch.leaf == leaf.cert


def test_the_server_name_selects_the_certificate(tmp_path: Path, pki: TestPki) -> None:
    now = real_now()
    a = pki.leaf("a.test", now + timedelta(days=200, hours=12))
    b = pki.leaf("b.test", now + timedelta(days=3, hours=12))
    chains = {"a.test": pki.chain_files(tmp_path, a, "a"), "b.test": pki.chain_files(tmp_path, b, "b")}
    with TlsServer(chains) as server:
        item_b = check_certificate(tls_target("b", server.port, "b.test"), now, verify_context=pki.trust())
        item_a = check_certificate(tls_target("a", server.port, "a.test"), now, verify_context=pki.trust())
    assert "b.test" in server.names_seen
    assert (item_b.metrics["subject"], *expiry(item_b)[:2]) == ("CN=b.test", "fail", 3)
    assert (item_a.metrics["subject"], *expiry(item_a)[:2]) == ("CN=a.test", "ok", 200)
    assert "verify" not in expiry(item_b)[2]


@pytest.fixture
def plain_server() -> Iterator[int]:
    """A TCP server that is not TLS: it greets like SSH and waits."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" * 20)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.close()
    thread.join(timeout=5)
    for conn in held:
        conn.close()


def test_a_port_that_does_not_speak_tls_is_permanent(plain_server: int) -> None:
    with pytest.raises(PermanentFailure, match=r"TLSError: handshake failed \(127\.0\.0\.1:\d+\)"):
        read_endpoint_chain("127.0.0.1", plain_server, timeout=5)


def test_a_closed_port_is_transient() -> None:
    with closed_port() as port, pytest.raises(TransientFailure, match=f"connection refused \\(127.0.0.1:{port}\\)"):
        read_endpoint_chain("127.0.0.1", port, timeout=5)


def test_an_unreachable_endpoint_is_an_error_and_the_others_are_still_judged(tmp_path: Path, pki: TestPki) -> None:
    now = real_now()
    leaf = pki.leaf("localhost", now + timedelta(days=20, hours=12))
    soon = tmp_path / "soon.pem"
    soon.write_bytes(pki.leaf("soon.test", now + timedelta(days=3, hours=12)).pem)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with TlsServer({"localhost": pki.chain_files(tmp_path, leaf)}) as server, closed_port() as port:
        batch = [
            tls_target("gone", port),
            tls_target("api", server.port),
            file_target("soon", soon),
            file_target("junk", junk),
        ]
        items = check_certificates(batch, now, verify_context=pki.trust())
        with pytest.raises(TransientFailure) as retried:
            check_certificates(batch, now, retry_unreachable=True, verify_context=pki.trust())
    assert [item.name for item in items] == ["gone", "api", "soon", "junk"]
    assert [item.status for item in items] == ["error", "warn", "fail", "error"]
    assert expiry(items[0]) == (
        "error",
        None,
        f"certificate not read: ConnectError: connection refused (127.0.0.1:{port})",
    )
    assert expiry(items[3])[2] == f"certificate not read: {junk}: not a PEM or DER certificate"
    assert [expiry(i)[1] for i in items[1:3]] == [20, 3]
    # before its last attempt, the task retries only what may pass: the refused connection
    assert str(retried.value) == f"gone: ConnectError: connection refused (127.0.0.1:{port})"


# -- dated items ----------------------------------------------------------------------------------


KATHMANDU = "Asia/Kathmandu"  # UTC+05:45: the end of a day there is 18:15 UTC


@pytest.mark.parametrize(
    ("now", "status", "days_left", "words"),
    [
        (datetime(2027, 3, 19, 6, 0, tzinfo=UTC), "warn", 12, "expires in 12 days (2027-03-31)"),
        (datetime(2027, 3, 24, 18, 14, tzinfo=UTC), "fail", 7, "expires in 7 days (2027-03-31)"),
        (datetime(2027, 3, 24, 18, 15, tzinfo=UTC), "fail", 7, "expires in 7 days (2027-03-31)"),  # 00:00 there
        (datetime(2027, 3, 24, 18, 16, tzinfo=UTC), "fail", 6, "expires in 6 days (2027-03-31)"),
        (datetime(2027, 3, 1, 18, 14, tzinfo=UTC), "warn", 30, "expires in 30 days (2027-03-31)"),
        (datetime(2027, 2, 28, 18, 14, tzinfo=UTC), "ok", 31, "expires in 31 days (2027-03-31)"),
        (datetime(2027, 3, 31, 18, 14, tzinfo=UTC), "fail", 0, "expires in less than a day (2027-03-31)"),
        (datetime(2027, 3, 31, 18, 15, tzinfo=UTC), "fail", -1, "expired less than a day ago (2027-03-31)"),
        (datetime(2027, 4, 3, 12, 0, tzinfo=UTC), "fail", -3, "expired 2 days ago (2027-03-31)"),
    ],
)
def test_a_dated_item_expires_at_the_end_of_its_day_in_the_config_timezone(
    now: datetime, status: str, days_left: int, words: str
) -> None:
    config = Config.model_validate(
        {
            "timezone": KATHMANDU,
            "expiry": {"items": [{"name": "pagerduty-contract", "expires": "2027-03-31", "owner": "ops@example.com"}]},
        }
    )
    (item,) = dated_items(config, now)
    assert item.name == "pagerduty-contract"
    assert expiry(item) == (status, days_left, f"pagerduty-contract {words}, owner ops@example.com")
    assert item.metrics == {
        "expires_at": "2027-03-31T18:15:00Z",
        "days_left": days_left,
        "source": "date",
        "owner": "ops@example.com",
        "kind": None,
    }


def test_a_dated_item_counts_local_days_across_a_dst_change() -> None:
    from zoneinfo import ZoneInfo

    los_angeles = ZoneInfo("America/Los_Angeles")  # clocks go forward on 2027-03-14: that day has 23 hours
    entry = DatedItem(name="tls-wildcard-renewal", expires=date(2027, 3, 14), kind="domain")
    now = datetime(2027, 3, 13, 23, 30, tzinfo=los_angeles)  # 23.5 real hours before the end of the 14th
    item = dated_item(entry, now, los_angeles, WARN, FAIL)
    assert expiry(item) == ("fail", 1, "tls-wildcard-renewal (domain) expires in 1 day (2027-03-14)")
    assert item.metrics["expires_at"] == "2027-03-15T07:00:00Z"
    assert item.metrics["kind"] == "domain"


def test_warn_and_fail_can_be_overridden_per_entry(tmp_path: Path, pki: TestPki) -> None:
    config = Config.model_validate(
        {
            "expiry": {
                "warn_within": "30d",
                "fail_within": "7d",
                "items": [
                    {"name": "license", "expires": "2026-12-25", "warn_within": "10d", "fail_within": "2d"},
                    {"name": "domain", "expires": "2026-12-25", "warn_within": "60d", "fail_within": "21d"},
                    {"name": "contract", "expires": "2026-12-25"},
                ],
            }
        }
    )
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # 20 days and 12 hours before the end of 2026-12-25
    assert [expiry(i)[:2] for i in dated_items(config, now)] == [("ok", 20), ("fail", 20), ("warn", 20)]
    path = tmp_path / "cert.pem"
    path.write_bytes(pki.leaf("x.test", NOW + timedelta(days=20, hours=1)).pem)
    assert expiry(check_certificate(file_target("c", path, warn=10 * DAY, fail=2 * DAY), NOW))[:2] == ("ok", 20)
    assert expiry(check_certificate(file_target("c", path, warn=60 * DAY, fail=21 * DAY), NOW))[:2] == ("fail", 20)


# -- targets from the config ----------------------------------------------------------------------


def test_targets_are_the_configured_certificates_and_every_https_service() -> None:
    config = Config.model_validate(
        {
            "expiry": {
                "warn_within": "30d",
                "fail_within": "7d",
                "certificates": [
                    {"name": "mail-tls", "tls": "mail.example.com:465", "warn_within": "45d"},
                    {"name": "portal", "url": "https://portal.example.com/login", "server_name": "sso.example.com"},
                    {"name": "v6", "tls": "[2001:db8::1]:8443"},
                    {"name": "internal-ca", "file": "/etc/ssl/certs/internal-ca.pem", "fail_within": "14d"},
                ],
            },
            "services": [
                {"name": "shop-api", "url": "https://shop.example.com:8443/health", "timeout": "3s"},
                {"name": "plain", "url": "http://plain.example.com/"},
                {"name": "db", "tcp": "db.example.com:5432"},
            ],
        }
    )
    targets = certificate_targets(config)
    assert targets == [
        CertificateTarget("mail-tls", "tls", 45 * DAY, FAIL, host="mail.example.com", port=465),
        CertificateTarget(
            "portal", "tls", WARN, FAIL, host="portal.example.com", port=443, server_name="sso.example.com"
        ),
        CertificateTarget("v6", "tls", WARN, FAIL, host="2001:db8::1", port=8443),
        CertificateTarget("internal-ca", "file", WARN, 14 * DAY, file="/etc/ssl/certs/internal-ca.pem"),
        CertificateTarget("shop-api", "tls", WARN, FAIL, host="shop.example.com", port=8443, timeout=3.0),
    ]
    assert targets[2].where == "[2001:db8::1]:8443"


def test_an_https_service_certificate_item_is_named_after_the_service(tmp_path: Path, pki: TestPki) -> None:
    now = real_now()
    leaf = pki.leaf("localhost", now + timedelta(days=200, hours=12))
    with TlsServer({"localhost": pki.chain_files(tmp_path, leaf)}) as server:
        config = Config.model_validate(
            {"services": [{"name": "shop-api", "url": f"https://localhost:{server.port}/health"}]}
        )
        (target,) = certificate_targets(config)
        (item,) = check_certificates([target], now, verify_context=pki.trust())
    day = leaf.cert.not_valid_after_utc.date().isoformat()
    assert (item.name, *expiry(item)) == ("shop-api", "ok", 200, f"expires in 200 days ({day})")


def test_batches_cover_every_target_in_order() -> None:
    targets = [CertificateTarget(f"t{i}", "file", WARN, FAIL, file=f"/c/{i}.pem") for i in range(45)]
    batches = certificate_batches(targets)
    assert len(batches) <= CERTIFICATE_TASK_RUNS
    assert [t for batch in batches for t in batch] == targets
    assert batch_label(batches[0]) == "t0…t2 (3)"
    assert batch_label(certificate_batches(targets[:1])[0]) == "t0"
    assert certificate_batches([]) == []


# -- the task -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_api")
def test_the_task_retries_an_unreachable_endpoint_then_reports_it_beside_the_others(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.expiry import certificates_task
    from tasks.routine import settle

    soon = tmp_path / "soon.pem"
    soon.write_bytes(issue("soon.test", NOW + timedelta(days=3, hours=1)).pem)

    @flow
    def check(port: int) -> tuple[list[Item], str, str]:
        batch = [tls_target("gone", port), file_target("soon", soon)]
        quick = certificates_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)
        future = quick.submit(batch, NOW, batch_label(batch), "UTC")
        payload, error = settle(future)
        assert error is None
        return payload, future.state.message or "", str(future.task_run_id)

    with closed_port() as port:
        items, message, task_run_id = check(port)
    assert [(i.name, i.status) for i in items] == [("gone", "error"), ("soon", "fail")]
    assert message.startswith("gone: expiry: certificate not read: ConnectError: connection refused")
    assert "soon: expiry: expires in 3 days (2026-12-08)" in message

    async def run_count() -> int:
        async with get_client() as client:
            return (await client.read_task_run(uuid.UUID(task_run_id))).run_count

    assert asyncio.run(run_count()) == 4  # the first attempt and the policy's 3 retries


def test_tls_context_used_to_read_accepts_anything() -> None:
    from tasks.expiry import _reading_context

    context = _reading_context()
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
