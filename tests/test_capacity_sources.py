"""Capacity sources against real components: an embedded PostgreSQL, moto's S3 over HTTP, a temp
filesystem and a real Prometheus (Debian's ``/usr/bin/prometheus``, scraping itself), plus the config's
refusal of a threshold unit that does not fit its source."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from opsflow.config import CapacityMetric, Config, ConfigError, ConfigProblem, load_config
from opsflow.embedded import url_with_database
from tasks.capacity.sources import PROMETHEUS_MAX_POINTS, Sample, backfill_prometheus, sample_metric
from tasks.retry import PermanentFailure, TransientFailure
from tests.conftest import free_port
from tests.s3_server import S3Server

PROMETHEUS = Path("/usr/bin/prometheus")


def metric(source: dict[str, Any], threshold: str | float, name: str = "m") -> CapacityMetric:
    return CapacityMetric.model_validate({"metric": name, "source": source, "threshold": threshold})


def now() -> datetime:
    return datetime.now(UTC)


def one(samples: list[Sample]) -> Sample:
    assert len(samples) == 1, samples
    return samples[0]


# -- PostgreSQL ---------------------------------------------------------------------------------------


def test_postgres_database_size_is_the_databases_bytes(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("create table filler as select g, repeat('x', 500) as pad from generate_series(1, 20000) g")
        expected = conn.execute("select pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    at = now()
    sample = one(sample_metric(metric({"type": "postgres", "url": pg_url}, "10GB"), Config.empty(), at))
    assert sample.metric == "m" and sample.ts == at
    assert sample.value == pytest.approx(expected, rel=0.01)
    assert sample.value > 10_000_000  # the 10 MB table is in it


def test_postgres_connections_as_percent_and_as_fraction(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        limit = int(conn.execute("show max_connections").fetchone()[0])  # type: ignore[index]
    percent = metric({"type": "postgres", "url": pg_url, "measure": "connections"}, "80%")
    fraction = metric({"type": "postgres", "url": pg_url, "measure": "connections"}, 0.8)

    before = one(sample_metric(percent, Config.empty(), now())).value
    held = [psycopg.connect(pg_url, autocommit=True) for _ in range(5)]
    try:
        during = one(sample_metric(percent, Config.empty(), now())).value
        as_fraction = one(sample_metric(fraction, Config.empty(), now())).value
    finally:
        for conn in held:
            conn.close()

    assert 0 < before < during <= 100
    # Five more sessions, give or take one backend still exiting from an earlier sample.
    assert during - before == pytest.approx(500 / limit, abs=100 / limit)
    assert as_fraction == pytest.approx(during / 100, abs=1 / limit)


def test_postgres_unreachable_is_transient_and_never_shows_the_password() -> None:
    url = f"postgresql://ops:Sup3rSecretPw@127.0.0.1:{free_port()}/orders"
    with pytest.raises(TransientFailure) as excinfo:
        sample_metric(metric({"type": "postgres", "url": url}, "1GB"), Config.empty(), now())
    message = str(excinfo.value)
    assert "orders on 127.0.0.1" in message and "Sup3rSecretPw" not in message
    assert "\n" not in message


def test_postgres_missing_database_is_permanent(pg_server_url: str) -> None:
    url = url_with_database(pg_server_url, "no_such_database_here")
    with pytest.raises(PermanentFailure, match="does not exist"):
        sample_metric(metric({"type": "postgres", "url": url}, "1GB"), Config.empty(), now())


def test_unit_mismatch_in_code_built_metric_is_permanent_before_any_connection() -> None:
    # CapacityMetric alone is not checked against its source (that is the config's cross-field rule).
    unreachable = f"postgresql://ops@127.0.0.1:{free_port()}/orders"
    with pytest.raises(PermanentFailure, match="postgres database_size is a size"):
        sample_metric(metric({"type": "postgres", "url": unreachable}, "80%"), Config.empty(), now())


def test_import_source_has_nothing_to_sample() -> None:
    assert sample_metric(metric({"type": "import"}, 5000), Config.empty(), now()) == []


# -- S3 -----------------------------------------------------------------------------------------------


def s3_config(s3_server: S3Server, measure: str, threshold: str | int, storage_prefix: str = "") -> Config:
    return Config.model_validate(
        {
            "storages": {
                "s3main": {"type": "s3", "bucket": "capacity", "endpoint_url": s3_server.url, "prefix": storage_prefix}
            },
            "capacity": [
                {
                    "metric": "bucket",
                    "source": {"type": "s3", "storage": "s3main", "prefix": "orders/", "measure": measure},
                    "threshold": threshold,
                }
            ],
        }
    )


def test_s3_bytes_and_objects_over_several_pages(s3_client: Any, s3_server: S3Server) -> None:
    s3_client.create_bucket(Bucket="capacity")
    s3_server.put_objects("capacity", {f"pg/orders/{n:05d}.dump": b"x" * (n % 7 + 1) for n in range(2500)})
    s3_server.put_objects("capacity", {"pg/orders/folder/": b"", "pg/other/big.dump": b"y" * 10_000})
    expected_bytes = sum(n % 7 + 1 for n in range(2500))

    by_bytes = s3_config(s3_server, "bytes", "2TB", storage_prefix="pg/")
    s3_server.clear()
    sample = one(sample_metric(by_bytes.capacity[0], by_bytes, now()))
    assert sample.value == expected_bytes  # pg/other/ is outside the storage + source prefix
    assert len(s3_server.requests_matching(operation="ListObjectsV2", bucket="capacity")) == 3  # 1,000 a page

    by_count = s3_config(s3_server, "objects", 100_000, storage_prefix="pg/")
    assert one(sample_metric(by_count.capacity[0], by_count, now())).value == 2500  # the "folder" is no object


def test_s3_access_denied_is_permanent_and_throttling_transient(s3_client: Any, s3_server: S3Server) -> None:
    s3_client.create_bucket(Bucket="capacity")
    config = s3_config(s3_server, "bytes", "1TB")
    s3_server.throttle("capacity", times=1)
    with pytest.raises(TransientFailure, match="SlowDown"):
        sample_metric(config.capacity[0], config, now())
    assert len(s3_server.requests_matching(operation="ListObjectsV2", bucket="capacity")) == 1  # one attempt
    s3_server.deny("capacity")
    with pytest.raises(PermanentFailure, match="AccessDenied"):
        sample_metric(config.capacity[0], config, now())


# -- filesystem ---------------------------------------------------------------------------------------


def test_filesystem_used_bytes_and_percent(tmp_path: Path) -> None:
    usage = shutil.disk_usage(tmp_path)
    used_bytes = one(sample_metric(metric({"type": "filesystem", "path": str(tmp_path)}, "1TB"), Config.empty(), now()))
    used_percent = one(
        sample_metric(metric({"type": "filesystem", "path": str(tmp_path)}, "80%"), Config.empty(), now())
    )
    # Other processes write to the same disk meanwhile: close, not equal.
    assert used_bytes.value == pytest.approx(usage.used, abs=256 * 1024 * 1024)
    assert used_percent.value == pytest.approx(100 * usage.used / (usage.used + usage.free), abs=1.0)
    assert 0 < used_percent.value <= 100


def test_filesystem_missing_path_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentFailure, match="does not exist"):
        sample_metric(metric({"type": "filesystem", "path": str(tmp_path / "gone")}, "80%"), Config.empty(), now())


# -- Prometheus (real) --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on a loopback port scraping itself every second; its URL, once it holds a few
    samples of ``up``."""
    if not PROMETHEUS.exists():
        if shutil.which("apt-get") is None:
            pytest.skip("/usr/bin/prometheus is absent and apt-get is unavailable to install Debian's prometheus")
        pytest.fail("/usr/bin/prometheus is absent: install Debian's package (apt-get install prometheus, as .ci/run)")
    home = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    (home / "prometheus.yml").write_text(
        textwrap.dedent(
            f"""\
            global: {{scrape_interval: 1s, evaluation_interval: 1s}}
            scrape_configs:
              - job_name: self
                static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
            """
        )
    )
    log = (home / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_samples(url, process, home / "prometheus.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for_samples(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Until Prometheus is ready and has scraped itself at least three times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                answer = httpx.get(f"{url}/api/v1/query", params={"query": "count_over_time(up[1m])"}, timeout=2)
                if float(answer.json()["data"]["result"][0]["value"][1]) >= 3:
                    return
        time.sleep(0.25)
    pytest.fail(f"prometheus did not collect samples within {timeout:.0f}s: {log.read_text()[-2000:]}")


def prom(url: str, query: str, threshold: str | float = 1_000_000) -> CapacityMetric:
    return metric({"type": "prometheus", "url": url, "query": query}, threshold, name="prom")


def test_prometheus_sample_now(prometheus: str) -> None:
    at = now()
    sample = one(sample_metric(prom(prometheus, "prometheus_tsdb_head_series"), Config.empty(), at))
    assert sample.metric == "prom"
    assert sample.ts == at  # evaluated at `now`
    assert sample.value > 10  # Prometheus's own metrics
    assert one(sample_metric(prom(prometheus, "scalar(up) * 100", "80%"), Config.empty(), at)).value == 100


def test_prometheus_backfill_through_query_range(prometheus: str) -> None:
    end = now()
    samples = backfill_prometheus(prom(prometheus, "up"), end - timedelta(seconds=30), end, timedelta(seconds=1))
    assert len(samples) >= 3
    assert all(sample.value == 1 and sample.metric == "prom" for sample in samples)
    assert [s.ts for s in samples] == sorted(s.ts for s in samples)
    assert all(end - timedelta(seconds=31) <= s.ts <= end for s in samples)
    assert {(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(samples)} == {1.0}


def test_prometheus_backfill_coarsens_a_step_prometheus_would_refuse(prometheus: str) -> None:
    # 90 days at 1s would be 7.8M points; Prometheus refuses more than 11,000 per series.
    step = -(-90 * 86400 // (PROMETHEUS_MAX_POINTS - 1))  # the coarsest step needed: 707s
    end = now()
    # A span of exactly (points - 1) steps, so the last point falls on `end`, where there is data.
    start = end - timedelta(seconds=step * (PROMETHEUS_MAX_POINTS - 1))
    samples = backfill_prometheus(prom(prometheus, "up"), start, end, timedelta(seconds=1))
    # Prometheus has existed for seconds: only the point at `end` finds data within its 5-minute lookback.
    assert [s.value for s in samples] == [1.0]
    assert timedelta(0) <= end - samples[0].ts < timedelta(milliseconds=1)  # Prometheus keeps milliseconds
    samples = backfill_prometheus(prom(prometheus, "up"), end - timedelta(days=90), end, timedelta(seconds=1))
    assert len(samples) <= 1  # no "exceeded maximum resolution of 11,000 points" from Prometheus


def test_prometheus_backfill_without_data_is_empty(prometheus: str) -> None:
    end = now()
    assert (
        backfill_prometheus(prom(prometheus, 'up{job="nope"}'), end - timedelta(hours=1), end, timedelta(minutes=1))
        == []
    )


def test_prometheus_several_series_are_refused_with_advice(prometheus: str) -> None:
    query = '{__name__=~"up|prometheus_tsdb_head_series"}'
    with pytest.raises(PermanentFailure) as excinfo:
        sample_metric(prom(prometheus, query), Config.empty(), now())
    message = str(excinfo.value)
    assert "the query returned 2 series" in message and "sum(...) or avg(...)" in message
    end = now()
    with pytest.raises(PermanentFailure, match="returned 2 series"):
        backfill_prometheus(prom(prometheus, query), end - timedelta(seconds=10), end, timedelta(seconds=1))


def test_prometheus_bad_promql_is_permanent_with_prometheus_error(prometheus: str) -> None:
    with pytest.raises(PermanentFailure) as excinfo:
        sample_metric(prom(prometheus, "sum(rate(up[1m])"), Config.empty(), now())
    assert "bad_data" in str(excinfo.value) and "parse error" in str(excinfo.value)
    assert "HTTP 400" in str(excinfo.value)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("vector(0) / 0", "gives NaN"),
        ("vector(1) / 0", "gives +Inf"),
        ("0 / 0", "gives NaN"),  # a scalar result
        ('up{job="nope"}', "returned no series"),
        ("up[1m]", "gives a matrix result"),
    ],
)
def test_prometheus_results_that_are_no_sample(prometheus: str, query: str, expected: str) -> None:
    with pytest.raises(PermanentFailure, match=expected.replace("+", r"\+")):
        sample_metric(prom(prometheus, query), Config.empty(), now())


def test_backfill_needs_a_prometheus_source_and_a_range() -> None:
    end = now()
    with pytest.raises(PermanentFailure, match="only a prometheus source can be backfilled"):
        backfill_prometheus(metric({"type": "import"}, 1), end - timedelta(days=1), end, timedelta(hours=1))
    with pytest.raises(PermanentFailure, match="backfill range ends"):
        backfill_prometheus(prom("http://127.0.0.1:9", "up"), end, end, timedelta(hours=1))


def test_prometheus_unreachable_is_transient_and_never_shows_the_password() -> None:
    url = f"http://watcher:Pr0mSecretPw@127.0.0.1:{free_port()}"
    with pytest.raises(TransientFailure) as excinfo:
        sample_metric(prom(url, "up"), Config.empty(), now())
    assert "Pr0mSecretPw" not in str(excinfo.value) and "ConnectError" in str(excinfo.value)


# -- a misbehaving "Prometheus": the answer is untrusted input --------------------------------------------


class _Answers(ThreadingHTTPServer):
    answer: tuple[int, dict[str, str], bytes | None] = (200, {}, b"")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: no Content-Length needed

    def do_GET(self) -> None:
        status, headers, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stops reading early
            if body is None:  # 20 MiB, streamed
                for _ in range(20):
                    self.wfile.write(b"[" * (1 << 20))
            else:
                self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[_Answers]:
    server = _Answers(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "headers", "body", "failure", "expected"),
    [
        (200, {"Content-Type": "text/html"}, b"<html>\n<b>login</b></html>", PermanentFailure, "not a Prometheus API"),
        (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>", TransientFailure, "HTTP 502"),
        (429, {"Content-Type": "text/plain"}, b"slow down", TransientFailure, "HTTP 429"),
        (404, {"Content-Type": "text/plain"}, b"404 page not found", PermanentFailure, "HTTP 404"),
        (200, {}, None, PermanentFailure, "larger than 10 MiB"),
        (200, {"Content-Length": str(50 << 20)}, b"{}", PermanentFailure, "larger than 10 MiB"),
        (
            503,
            {"Content-Type": "application/json"},
            b'{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}',
            TransientFailure,
            "timeout: query timed out",
        ),
        (
            422,
            {"Content-Type": "application/json"},
            b'{"status":"error","errorType":"execution","error":"query processing would load too many samples"}',
            PermanentFailure,
            "execution: query processing would load too many samples",
        ),
        (200, {}, b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"12"]}]}}', None, ""),
        (
            200,
            {},
            b'{"status":"success","data":{"resultType":"vector","result":[{"value":"12"}]}}',
            PermanentFailure,
            "malformed",
        ),
    ],
)
def test_prometheus_answers_that_are_not_a_sample(
    fake_prometheus: _Answers,
    status: int,
    headers: dict[str, str],
    body: bytes | None,
    failure: type[Exception] | None,
    expected: str,
) -> None:
    fake_prometheus.answer = (status, headers, body)
    source = prom(f"http://127.0.0.1:{fake_prometheus.server_address[1]}/", "up")
    if failure is None:
        assert one(sample_metric(source, Config.empty(), now())).value == 12
        return
    with pytest.raises(failure, match=expected) as excinfo:
        sample_metric(source, Config.empty(), now())
    assert "\n" not in str(excinfo.value) and len(str(excinfo.value)) < 400


# -- config: the threshold unit must fit the source ----------------------------------------------------


def test_config_refuses_threshold_units_that_do_not_fit_the_source(tmp_path: Path) -> None:
    path = tmp_path / "opsflow.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            storages: {s3main: {type: s3, bucket: b}}
            capacity:
              - {metric: a, source: {type: postgres, url: "postgresql://db/x"}, threshold: 80%}
              - {metric: b, source: {type: postgres, url: "postgresql://db/x", measure: connections}, threshold: 10GB}
              - {metric: c, source: {type: filesystem, path: /}, threshold: 0.8}
              - {metric: d, source: {type: s3, storage: s3main}, threshold: 5000}
              - {metric: e, source: {type: s3, storage: s3main, measure: objects}, threshold: 2TB}
              - {metric: ok1, source: {type: postgres, url: "postgresql://db/x"}, threshold: 500GB}
              - {metric: ok2, source: {type: postgres, url: "postgresql://db/x", measure: connections}, threshold: 80%}
              - {metric: ok3, source: {type: postgres, url: "postgresql://db/x", measure: connections}, threshold: 0.8}
              - {metric: ok4, source: {type: filesystem, path: /}, threshold: 80%}
              - {metric: ok5, source: {type: filesystem, path: /}, threshold: 1TB}
              - {metric: ok6, source: {type: s3, storage: s3main, measure: objects}, threshold: 100000}
              - {metric: ok7, source: {type: prometheus, url: "http://p:9090", query: up}, threshold: 80%}
              - {metric: ok8, source: {type: prometheus, url: "http://p:9090", query: up}, threshold: 1GB}
              - {metric: ok9, source: {type: import}, threshold: 90%}
              - {metric: bad, source: {type: s3, storage: s3main, measure: files}, threshold: 1TB}
            """
        )
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    file = str(path)
    assert excinfo.value.problems == [
        ConfigProblem(
            file,
            3,
            "capacity.0.threshold",
            "threshold 80% is a percentage, but postgres database_size is a size: use a size like 500GB",
        ),
        ConfigProblem(
            file,
            4,
            "capacity.1.threshold",
            "threshold 10GB is a size, but postgres connections is a share of max_connections: "
            "use a percentage like 80% or a fraction like 0.8",
        ),
        ConfigProblem(
            file,
            5,
            "capacity.2.threshold",
            "threshold 0.8 is a plain number, but filesystem usage is a size or a percentage: "
            "use a size like 500GB or a percentage like 80%",
        ),
        ConfigProblem(
            file,
            6,
            "capacity.3.threshold",
            "threshold 5000 is a plain number, but s3 bytes is a size: use a size like 2TB "
            "(or measure: objects to count objects)",
        ),
        ConfigProblem(
            file,
            7,
            "capacity.4.threshold",
            "threshold 2TB is a size, but s3 objects is a count: use a plain number like 100000",
        ),
        ConfigProblem(file, 17, "capacity.14.source.measure", "expected 'bytes' or 'objects', got 'files'"),
    ]


def test_config_built_in_code_refuses_a_unit_mismatch_too() -> None:
    with pytest.raises(ValueError, match=r"capacity\.0\.threshold: threshold 80% is a percentage, but postgres"):
        Config.model_validate(
            {
                "capacity": [
                    {"metric": "a", "source": {"type": "postgres", "url": "postgresql://db/x"}, "threshold": "80%"}
                ]
            }
        )


def test_s3_measure_defaults_to_bytes_and_is_documented() -> None:
    from opsflow.config import S3Source

    assert S3Source(storage="s3main").measure == "bytes"
    assert "objects" in (S3Source.model_fields["measure"].description or "")
