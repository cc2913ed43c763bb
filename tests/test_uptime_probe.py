"""Uptime probing against real loopback services: verdicts, TLS expiry, incidents, no result lost."""

from __future__ import annotations

import asyncio
import errno
import json
import ssl
import time
import tracemalloc
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from opsflow.cli import run
from opsflow.config import Config, Service
from opsflow.spool import probe_spool
from opsflow.store import OpsStore
from tasks.incidents import ServiceState, advance
from tasks.probes import ProbeOutcome, probe_all
from tasks.uptime import judge_services, track_incidents, write_with_spool
from tests.http_targets import HttpTarget, closed_port, gzip_bomb, self_signed, silent_port, tls_context
from tests.receiver import HttpReceiver


def service(name: str, **fields: object) -> Service:
    return Service(name=name, **({"timeout": 1.0, "interval": 60.0} | fields))


def verdicts(services: list[Service], deadline: float | None = None) -> dict[str, ProbeOutcome]:
    return {o.service: o for o in asyncio.run(probe_all(services, deadline))}


def test_each_answer_gets_the_right_verdict_and_error() -> None:
    with HttpTarget() as target, silent_port() as hung:
        results = verdicts(
            [
                service("up", url=target.url("/health"), expect={"status": [200], "body_contains": '"ok"'}),
                service("redirected", url=target.url("/redirect"), expect={"body_contains": '"ok"'}),
                service("error", url=target.url("/500")),
                service("wrong-body", url=target.url("/wrong-body"), expect={"body_contains": '"ok"'}),
                service("timeout", url=target.url("/slow"), timeout=0.5),
                service("closed", url=f"http://127.0.0.1:{closed_port()}/health"),
                service("slow-tls", url=f"https://127.0.0.1:{hung}/health", timeout=0.5),
                service("tcp-up", tcp=f"127.0.0.1:{target.server.server_address[1]}"),
                service("tcp-closed", tcp=f"127.0.0.1:{closed_port()}"),
                service("too-slow", url=target.url("/slow"), timeout=5.0, expect={"max_latency": 0.5}),
            ]
        )
    assert results["up"].ok and results["up"].status_code == 200 and results["up"].latency_ms is not None
    assert results["redirected"].ok
    assert results["tcp-up"].ok
    errors = {name: (o.ok, o.status_code, (o.error or "").split(":")[0]) for name, o in results.items() if not o.ok}
    assert errors == {
        "error": (False, 500, "UnexpectedStatus"),
        "wrong-body": (False, 200, "UnexpectedBody"),
        "timeout": (False, None, "Timeout"),
        "closed": (False, None, "ConnectError"),
        "slow-tls": (False, None, "Timeout"),
        "tcp-closed": (False, None, "ConnectError"),
        "too-slow": (False, 200, "TooSlow"),
    }
    assert results["error"].error == "UnexpectedStatus: HTTP 500, expected 200"


def test_connect_failures_read_the_same_for_tcp_and_http_probes() -> None:
    refused = closed_port()
    results = verdicts(
        [
            service("tcp", tcp=f"127.0.0.1:{refused}"),
            service("http", url=f"http://127.0.0.1:{refused}/health"),
            service("tcp-name", tcp="nosuch.invalid:5432"),
            service("http-name", url="https://nosuch.invalid/health"),
        ]
    )
    assert results["tcp"].error == f"ConnectError: connection refused (127.0.0.1:{refused})"
    assert results["http"].error == f"ConnectError: connection refused (127.0.0.1:{refused})"
    # A name that does not resolve (``.invalid`` never does, RFC 6761); offline, resolution itself fails.
    assert results["tcp-name"].error in (
        "ConnectError: unknown host (nosuch.invalid:5432)",
        "ConnectError: name resolution failed (nosuch.invalid:5432)",
    )
    assert results["http-name"].error in (
        "ConnectError: unknown host (nosuch.invalid:443)",
        "ConnectError: name resolution failed (nosuch.invalid:443)",
    )
    # Other socket errors read alike; a TLS failure keeps its own message.
    from tasks.probes import connection_error

    unreachable = OSError(errno.EHOSTUNREACH, "No route to host")
    assert connection_error(unreachable, "10.0.0.9:5432") == "ConnectError: host unreachable (10.0.0.9:5432)"
    wrapped = httpx.ConnectError("All connection attempts failed", request=httpx.Request("GET", "http://[::1]:81/"))
    wrapped.__cause__ = OSError(errno.ENETUNREACH, "Network is unreachable")
    assert connection_error(wrapped) == "ConnectError: network unreachable ([::1]:81)"
    tls = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")
    tls.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert connection_error(tls).startswith("ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]")


def test_a_hanging_target_does_not_hold_the_run_past_its_deadline() -> None:
    with HttpTarget() as target:
        started = time.perf_counter()
        results = verdicts(
            [service("hangs", url=target.url("/slow"), timeout=5.0), service("fine", url=target.url("/health"))],
            deadline=1.0,
        )
        elapsed = time.perf_counter() - started
    assert elapsed < 2.5
    assert results["fine"].ok
    assert results["hangs"].error == "Timeout: the run's deadline of 1s passed"


def test_certificate_expiry_is_read_and_warned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path, days_valid=10)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust our test CA, as a private CA would be trusted
    with HttpTarget(tls=tls_context(cert, key)) as target:
        config = Config(services=[service("api", url=target.url(), tls_expiry_warn=30 * 86400)])
        outcome = verdicts(config.services)["api"]
    assert outcome.ok
    assert outcome.tls_days_left is not None and 9.9 < outcome.tls_days_left < 10.1
    _, update = judge_services(config, [outcome], {})
    tls = update.items[0].check_named("tls")
    assert tls is not None and tls.status == "warn"
    assert tls.detail.startswith("the certificate expires in 10.0 days, warning under 30d")


T0 = datetime(2026, 11, 10, 1, 0, tzinfo=UTC)


def test_incidents_open_at_the_first_of_n_failures_and_close_at_the_next_success() -> None:
    state = ServiceState(service="api")
    events = []
    pattern = [True, False, False, True, False, False, False, False, True]  # threshold 3
    for minute, ok in enumerate(pattern):
        state, event = advance(state, T0 + timedelta(minutes=minute), ok, 3, in_maintenance=False)
        events.append(event and (event.kind, event.opened_at, event.at))
    opened_at = T0 + timedelta(minutes=4)
    assert events[6] == ("opened", opened_at, T0 + timedelta(minutes=6))
    assert events[8] == ("closed", opened_at, T0 + timedelta(minutes=8))
    assert [e for i, e in enumerate(events) if i not in (6, 8)] == [None] * 7


def test_failures_inside_maintenance_are_skipped_and_a_gap_does_not_break_the_run() -> None:
    state = ServiceState(service="api")
    state, _ = advance(state, T0, False, 3, in_maintenance=False)
    state, _ = advance(state, T0 + timedelta(minutes=1), False, 3, in_maintenance=True)
    state, _ = advance(state, T0 + timedelta(minutes=2), True, 3, in_maintenance=True)  # success in maintenance
    assert state.consecutive_failures == 1
    state, event = advance(state, T0 + timedelta(hours=5), False, 3, in_maintenance=False)  # after a gap
    assert state.consecutive_failures == 2 and event is None
    state, event = advance(state, T0 + timedelta(hours=5, minutes=1), False, 3, in_maintenance=False)
    assert event is not None and event.opened_at == T0


def outcome(name: str, at: datetime, ok: bool) -> ProbeOutcome:
    return ProbeOutcome(name, at, ok, 10.0 if ok else None, 200 if ok else None, None if ok else "ConnectError: x")


def test_incident_details_read_times_in_the_config_timezone_to_the_second() -> None:
    config = Config(
        timezone="Europe/Berlin", services=[service("api", url="https://api.example.com/", failure_threshold=2)]
    )
    first = datetime(2026, 12, 5, 12, 58, 22, 681555, tzinfo=UTC)
    states, update = judge_services(config, [outcome("api", first, False)], {})
    states, update = judge_services(
        config, [outcome("api", first + timedelta(minutes=1), False)], {s.service: s for s in states}
    )
    incident = update.items[0].check_named("incident")
    assert incident is not None and incident.detail == (
        "incident opened now since 2026-12-05 13:58:22 CET after 2 consecutive failures"
    )
    states, update = judge_services(
        config, [outcome("api", first + timedelta(minutes=2), False)], {s.service: s for s in states}
    )
    still = update.items[0].check_named("incident")
    assert still is not None and still.detail.startswith("incident open since 2026-12-05 13:58:22 CET after 3")
    _, update = judge_services(
        config, [outcome("api", first + timedelta(minutes=3), True)], {s.service: s for s in states}
    )
    closed = update.items[0].check_named("incident")
    assert closed is not None and closed.detail == (
        "0 consecutive failures, threshold 2; incident since 2026-12-05 13:58:22 CET closed"
    )


def test_rewriting_the_same_results_does_not_duplicate_them(store: OpsStore, tmp_path: Path) -> None:
    batch = [outcome("api", T0, True), outcome("db", T0, False)]
    spool = probe_spool()
    assert write_with_spool(store, batch, spool).inserted == 2
    assert write_with_spool(store, batch, spool).inserted == 0
    assert store.count_probe_results() == 2


def config_file(tmp_path: Path, target: HttpTarget, receiver: HttpReceiver | None = None, threshold: int = 2) -> Path:
    hook = f"notifications:\n  webhook: {{url: '{receiver.url('/hook')}'}}\n" if receiver else ""
    path = tmp_path / "opsflow.yaml"
    path.write_text(
        "services:\n"
        f"  - {{name: api, url: '{target.url()}', timeout: 2s, failure_threshold: {threshold}}}\n"
        f"  - {{name: tcp, tcp: '127.0.0.1:{target.server.server_address[1]}', timeout: 2s}}\n" + hook
    )
    return path


def test_a_store_outage_between_two_runs_loses_nothing(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with HttpTarget() as target:
        config = config_file(tmp_path, target)
        monkeypatch.setenv("OPSFLOW_STORE_URL", f"postgresql://ops@/opsflow?host={tmp_path}&port=9")
        assert run(["run", "uptime-probe", "--config", str(config)]) == 3
        assert "2 probe results spooled for the next run" in capsys.readouterr().err
        assert store.count_probe_results() == 0

        monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
        assert run(["run", "uptime-probe", "--config", str(config)]) == 0
        assert store.count_probe_results() == 4  # the spooled two and this run's two
        assert not probe_spool().path.exists()
        assert run(["run", "uptime-probe", "--config", str(config)]) == 0
        assert store.count_probe_results() == 6


def test_an_incident_opens_alerts_and_resolves_through_the_routine(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    with HttpTarget() as target:
        config = config_file(tmp_path, target, receiver, threshold=2)
        target.down = True
        assert run(["run", "uptime-probe", "--config", str(config), "--json"]) == 1
        first = json.loads(capsys.readouterr().out)
        api = next(i for i in first["items"] if i["name"] == "api")
        assert api["status"] == "fail"
        assert api["metrics"]["ok"] is False and api["metrics"]["status_code"] == 503
        assert api["metrics"]["incident_open"] is False
        assert receiver.to("/hook") == []  # one failure is not an incident yet

        assert run(["run", "uptime-probe", "--config", str(config), "--json"]) == 1
        second = json.loads(capsys.readouterr().out)
        assert next(i for i in second["items"] if i["name"] == "api")["metrics"]["incident_open"] is True
        hooks = receiver.to("/hook")
        assert [h.json()["event"] for h in hooks] == ["trigger"]
        assert hooks[0].json()["item"] == "api"

        target.down = False
        assert run(["run", "uptime-probe", "--config", str(config), "--json"]) == 0
        capsys.readouterr()
        assert [h.json()["event"] for h in receiver.to("/hook")] == ["trigger", "resolve"]
    incidents = store.incidents("api")
    assert len(incidents) == 1 and incidents[0]["closed_at"] is not None
    assert incidents[0]["last_error"].startswith("UnexpectedStatus: HTTP 503")


def test_configured_headers_go_only_to_the_configured_origin() -> None:
    headers = {"X-Api-Key": "k-123", "Authorization": "Bearer t-456", "Accept": "application/json"}
    with HttpTarget() as origin, HttpTarget() as other:
        elsewhere = origin.url("/redirect-to?" + urllib.parse.quote(other.url("/health"), safe=""))
        results = verdicts(
            [
                service("cross", url=elsewhere, headers=headers, expect={"body_contains": '"ok"'}),
                service("same", url=origin.url("/redirect"), headers=headers, expect={"body_contains": '"ok"'}),
            ]
        )
        assert results["cross"].ok and results["same"].ok
        received = [{k.lower() for k in h} for path, h in other.requests]
        assert received and all(not {"x-api-key", "authorization", "accept"} & seen for seen in received)
        by_path = {path: {k.lower(): v for k, v in h.items()} for path, h in origin.requests}
        assert by_path["/redirect-to"]["x-api-key"] == "k-123"
        assert by_path["/health"]["x-api-key"] == "k-123"  # a same-origin redirect keeps them
        assert by_path["/health"]["authorization"] == "Bearer t-456"


def test_a_gzip_bomb_is_read_only_to_its_first_mib() -> None:
    gzip_bomb()  # built before measuring
    with HttpTarget() as target:
        services = [
            service("bomb", url=target.url("/gzip-bomb"), timeout=5.0, expect={"body_contains": '"ok"'}),
            service("gzip", url=target.url("/gzip"), expect={"body_contains": '"ok"'}),
        ]
        tracemalloc.start()
        try:
            results = verdicts(services)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 20 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert results["gzip"].ok
    assert not results["bomb"].ok and results["bomb"].status_code == 200
    assert results["bomb"].error == "UnexpectedBody: the body does not contain '\"ok\"' in its first 1 MiB"


def test_a_spooled_row_the_store_refuses_is_set_aside_and_the_rest_written(
    store: OpsStore, caplog: pytest.LogCaptureFixture
) -> None:
    spool = probe_spool()
    bad = outcome("db", T0 + timedelta(minutes=1), False)
    bad = ProbeOutcome(bad.service, bad.checked_at, False, None, None, "ReadError: \x00 in the answer")
    spool.append([outcome("api", T0, True).row(), bad.row(), outcome("api", T0 + timedelta(minutes=2), False).row()])
    with caplog.at_level("WARNING"):
        count = write_with_spool(store, [outcome("api", T0 + timedelta(minutes=3), True)], spool)
    assert count.inserted == 3 and store.count_probe_results() == 3 and store.count_probe_results("db") == 0
    assert not spool.path.exists()
    rejected = [json.loads(line) for line in spool.rejected_path.read_text().splitlines()]
    assert spool.rejected_path.name == "probe_results.rejected.jsonl"
    assert [(r["service"], r["error"]) for r in rejected] == [("db", bad.error)]
    assert rejected[0]["rejected"].startswith("DataError")
    assert any(r.levelname == "WARNING" and "1 probe result the ops store refused" in r.message for r in caplog.records)


def refuse_probe_writes(store: OpsStore, refuse: bool) -> None:
    """The store's PostgreSQL refuses (or takes again) probe results: the store opens, the write fails."""
    with store.connection() as conn:
        if refuse:
            conn.execute(
                """create or replace function opsflow.refuse_writes() returns trigger language plpgsql as $$
                   begin raise exception 'read-only' using errcode = 'read_only_sql_transaction'; end $$"""
            )
            conn.execute(
                """create trigger refuse before insert on opsflow.probe_results
                   for each row execute function opsflow.refuse_writes()"""
            )
        else:
            conn.execute("drop trigger refuse on opsflow.probe_results")


def spooled_rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in probe_spool().path.read_text().splitlines()]


def test_a_store_that_refuses_the_write_after_it_opened_loses_nothing(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    with HttpTarget() as target:
        config = config_file(tmp_path, target)
        refuse_probe_writes(store, True)
        assert run(["run", "uptime-probe", "--config", str(config)]) == 3
        assert "2 probe results spooled for the next run" in capsys.readouterr().err
        assert store.count_probe_results() == 0 and len(spooled_rows()) == 2

        refuse_probe_writes(store, False)
        assert run(["run", "uptime-probe", "--config", str(config)]) == 0
        assert store.count_probe_results() == 4
        assert not probe_spool().path.exists()


def test_spooled_results_open_the_incident_at_their_own_time(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    with HttpTarget() as target:
        config = config_file(tmp_path, target, threshold=3)
        target.down = True
        refuse_probe_writes(store, True)
        for _ in range(2):  # two runs while the store refuses: their results are spooled
            assert run(["run", "uptime-probe", "--config", str(config)]) == 3
        first_failure = min(
            datetime.fromisoformat(str(r["checked_at"])) for r in spooled_rows() if r["service"] == "api"
        )
        refuse_probe_writes(store, False)
        capsys.readouterr()
        assert run(["run", "uptime-probe", "--config", str(config), "--json"]) == 1
        api = next(i for i in json.loads(capsys.readouterr().out)["items"] if i["name"] == "api")
    assert api["metrics"]["incident_open"] is True
    incident = next(c for c in api["checks"] if c["check"] == "incident")
    assert "after 3 consecutive failures" in incident["detail"]
    incidents = store.incidents("api")
    assert len(incidents) == 1 and incidents[0]["opened_at"] == first_failure and incidents[0]["closed_at"] is None
    assert store.probe_states()["api"]["consecutive_failures"] == 3


def test_an_incident_opened_and_closed_within_spooled_results_is_stored_closed(store: OpsStore) -> None:
    config = Config(services=[service("api", url="https://api.example.com/", failure_threshold=2)])
    minute = timedelta(minutes=1)
    spooled = [outcome("api", T0 + i * minute, ok).row() for i, ok in enumerate([False, False, True, False])]
    track_incidents.fn(store, config, [outcome("api", T0 + 4 * minute, False)], spooled[::-1])  # any order
    incidents = store.incidents("api")
    assert [(i["opened_at"], i["closed_at"]) for i in incidents] == [(T0, T0 + 2 * minute), (T0 + 3 * minute, None)]
    # Spooled rows already counted (a replayed spool) are not counted again.
    track_incidents.fn(store, config, [outcome("api", T0 + 5 * minute, False)], spooled)
    assert store.probe_states()["api"]["consecutive_failures"] == 3
    assert len(store.incidents("api")) == 2


def test_two_probe_runs_at_once_neither_loses_the_others_failure(store: OpsStore, pg_url: str) -> None:
    """The deployed every-minute run and a manual ``opsflow run uptime-probe`` advance the same service's
    failure run at once. The test holds an EXCLUSIVE lock on ``probe_state`` (reads pass, writes wait) until
    both runs are waiting on a lock, so without the probe-state lock both read 0 failures and both write 1."""
    import threading

    import psycopg

    config = Config(services=[service("api", url="https://api.example.com/", failure_threshold=2)])
    minute = timedelta(minutes=1)
    errors: list[BaseException] = []
    items: list[list[object]] = []

    def one_run(at: datetime) -> None:
        try:
            items.append(track_incidents.fn(store, config, [outcome("api", at, False)]))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    with psycopg.connect(pg_url) as holder:
        holder.execute("lock table opsflow.probe_state in exclusive mode")
        runs = [threading.Thread(target=one_run, args=(T0 + n * minute,)) for n in range(2)]
        for thread in runs:
            thread.start()
        deadline = time.monotonic() + 30
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            while True:
                (waiting,) = watcher.execute(
                    """select count(*) from pg_stat_activity where datname = current_database()
                       and wait_event_type = 'Lock'"""
                ).fetchone()  # type: ignore[misc]
                if waiting >= 2:
                    break
                assert time.monotonic() < deadline, "the two runs never both reached the store"
                time.sleep(0.05)
        holder.commit()  # releases the table lock: the runs go on
    for thread in runs:
        thread.join(30)
    assert not errors, errors
    assert store.probe_states()["api"]["consecutive_failures"] == 2
    incidents = store.incidents("api")
    assert len(incidents) == 1 and incidents[0]["closed_at"] is None
    assert len(items) == 2


def test_secret_headers_are_loaded_once_per_run_outside_the_event_loop_and_rotate_next_run(
    prefect_api: None,
    tmp_path: Path,
    pg_url: str,
    store: OpsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three services share one Secret block for their Authorization header, one has another block too:
    each block is loaded once per run (real blocks on the Prefect test server; the spy only counts and
    passes the call on), never while an event loop runs, and a rotated secret is sent by the next run."""
    from prefect.blocks.system import Secret

    Secret(value="Bearer tok-first-1111").save("opsflow-test-probe-token", overwrite=True)
    Secret(value="other-2222").save("opsflow-test-other-token", overwrite=True)
    loads: list[tuple[str, bool]] = []
    original_load, original_aload = Secret.load, Secret.aload

    def in_event_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def load(name: str, *args: object, **kwargs: object) -> object:
        loads.append((name, in_event_loop()))
        return original_load(name, *args, **kwargs)

    async def aload(name: str, *args: object, **kwargs: object) -> object:
        loads.append((name, True))
        return await original_aload(name, *args, **kwargs)

    monkeypatch.setattr(Secret, "load", load)
    monkeypatch.setattr(Secret, "aload", aload)
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    with HttpTarget() as target:
        token = "{secret: opsflow-test-probe-token}"
        config = tmp_path / "opsflow.yaml"
        config.write_text(
            "services:\n"
            + "".join(
                f"  - {{name: {name}, url: '{target.url(f'/health?{name}')}', headers: {{Authorization: {token}}}}}\n"
                for name in ("a", "b")
            )
            + f"  - {{name: c, url: '{target.url('/health?c')}', headers: {{Authorization: {token},"
            " X-Other-Key: {secret: opsflow-test-other-token}}}\n"
        )
        assert run(["run", "uptime-probe", "--config", str(config)]) == 0
        assert sorted(loads) == [("opsflow-test-other-token", False), ("opsflow-test-probe-token", False)]
        sent = [{k.lower(): v for k, v in headers.items()} for _, headers in target.requests]
        assert len(sent) == 3 and {h["authorization"] for h in sent} == {"Bearer tok-first-1111"}
        assert [h.get("x-other-key") for h in sent].count("other-2222") == 1

        # Rotated: the next run loads it again and sends the new value (no cache across runs).
        Secret(value="Bearer tok-second-3333").save("opsflow-test-probe-token", overwrite=True)
        loads.clear()
        target.server.requests.clear()  # type: ignore[attr-defined]
        assert run(["run", "uptime-probe", "--config", str(config)]) == 0
        assert sorted(loads) == [("opsflow-test-other-token", False), ("opsflow-test-probe-token", False)]
        sent = [{k.lower(): v for k, v in headers.items()} for _, headers in target.requests]
        assert len(sent) == 3 and {h["authorization"] for h in sent} == {"Bearer tok-second-3333"}
    err = capsys.readouterr().err
    assert "tok-first-1111" not in err and "tok-second-3333" not in err and "other-2222" not in err
