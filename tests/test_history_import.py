"""`opsflow probes import` and `opsflow capacity import`: validated, all-or-nothing, idempotent."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import opsflow.store as store_module
from opsflow.cli import run
from opsflow.errors import StoreUnavailable
from opsflow.history_csv import CsvProblems, ProbeRow, check_probe_csv, probe_rows
from opsflow.store import OpsStore

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def write_probe_csv(path: Path, rows: int, services: int = 3) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["service", "checked_at", "ok", "latency_ms", "status_code", "error"])
        for index in range(rows):
            ok = index % 97 != 0
            writer.writerow(
                [
                    f"svc-{index % services}",
                    (T0 + timedelta(seconds=60 * (index // services))).isoformat(),
                    "true" if ok else "false",
                    f"{10 + index % 50}.5" if ok else "",
                    "200" if ok else "503",
                    "" if ok else "HTTP 503",
                ]
            )
    return path


@pytest.fixture
def store_env(store: OpsStore, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> OpsStore:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    return store


def test_import_of_130k_probe_rows_twice_leaves_the_same_rows(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_probe_csv(tmp_path / "probes.csv", 130_000)
    assert run(["probes", "import", str(path)]) == 0
    assert "130000 probe results read, 130000 new, 0 already stored" in capsys.readouterr().out
    assert store_env.count_probe_results() == 130_000
    assert run(["probes", "import", str(path)]) == 0
    assert "0 new, 130000 already stored" in capsys.readouterr().out
    assert store_env.count_probe_results() == 130_000


def test_optional_columns_may_be_left_out(store_env: OpsStore, tmp_path: Path) -> None:
    path = tmp_path / "minimal.csv"
    path.write_text(
        "service,checked_at,ok,latency_ms\napi,2026-11-01T00:00:00Z,true,12\napi,2026-11-01T00:01:00+01:00,false,\n"
    )
    assert run(["probes", "import", str(path)]) == 0
    assert store_env.count_probe_results("api") == 2


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("api,2026-11-01T00:05:00,true,12,200,", "4: checked_at: time '2026-11-01T00:05:00' has no UTC offset"),
        ("api,yesterday,true,12,200,", "4: checked_at: expected an ISO 8601 time with offset, got 'yesterday'"),
        ("api,2026-11-01T00:05:00Z,yes,12,200,", "4: ok: expected true or false, got 'yes'"),
        ("api,2026-11-01T00:05:00Z,true,fast,200,", "4: latency_ms: expected a number, got 'fast'"),
        ("api,2026-11-01T00:05:00Z,true,-3,200,", "4: latency_ms: latency must not be negative"),
        ("api,2026-11-01T00:05:00Z,true,12,2000,", "4: status_code: expected an HTTP status code 100-599"),
        (",2026-11-01T00:05:00Z,true,12,200,", "4: service: must not be empty"),
        ("api,2026-11-01T00:05:00Z,true", "4: row has 3 fields, the header has 6"),
        ("api,2026-11-01T00:00:00Z,false,,500,boom", "4: row repeats the key of line 2 with different values"),
    ],
)
def test_a_file_with_one_bad_row_imports_nothing_and_names_the_line(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "service,checked_at,ok,latency_ms,status_code,error\n"
        "api,2026-11-01T00:00:00Z,true,12,200,\n"
        "api,2026-11-01T00:01:00Z,true,13,200,\n"
        f"{line}\n"
        "api,2026-11-01T00:09:00Z,true,14,200,\n"
    )
    assert run(["probes", "import", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{path}:{expected}")
    assert "Traceback" not in err
    assert store_env.count_probe_results() == 0


def test_header_problems_are_reported_together(store_env: OpsStore, tmp_path: Path, capsys) -> None:
    path = tmp_path / "header.csv"
    path.write_text("service,when,ok\napi,2026-11-01T00:00:00Z,true\n")
    assert run(["probes", "import", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:1: when: unknown column",
        f"{path}:1: checked_at: required column is missing",
        f"{path}:1: latency_ms: required column is missing",
    ]


def test_missing_file_and_unreachable_store_have_their_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["probes", "import", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    path = tmp_path / "ok.csv"
    path.write_text("metric,ts,value\ndisk,2026-11-01T00:00:00Z,1\n")
    monkeypatch.setenv("OPSFLOW_STORE_URL", f"postgresql://ops:s3cret@/opsflow?host={tmp_path}&port=9")
    assert run(["capacity", "import", str(path)]) == 3
    err = capsys.readouterr().err
    assert "ops store unreachable" in err
    assert "s3cret" not in err


def test_capacity_import_is_idempotent_and_takes_corrections(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cap.csv"
    lines = [f"tickets-backlog,{(T0 + timedelta(days=d)).isoformat()},{100 + d}" for d in range(90)]
    path.write_text("metric,ts,value\n" + "\n".join(lines) + "\n")
    assert run(["capacity", "import", str(path)]) == 0
    assert "90 samples read, 90 new, 0 updated, 0 already stored" in capsys.readouterr().out
    assert run(["capacity", "import", str(path)]) == 0
    assert "0 new, 0 updated, 90 already stored" in capsys.readouterr().out
    path.write_text("metric,ts,value\n" + "\n".join([*lines[:-1], lines[-1].rsplit(",", 1)[0] + ",999"]) + "\n")
    assert run(["capacity", "import", str(path)]) == 0
    assert "0 new, 1 updated, 89 already stored" in capsys.readouterr().out
    assert store_env.count_capacity_samples("tickets-backlog") == 90


def test_bad_capacity_value_imports_nothing(store_env: OpsStore, tmp_path: Path, capsys) -> None:
    path = tmp_path / "cap.csv"
    path.write_text("metric,ts,value\ndisk,2026-11-01T00:00:00Z,1\ndisk,2026-11-01T01:00:00Z,lots\n")
    assert run(["capacity", "import", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"{path}:3: value: expected a number, got 'lots'"
    assert store_env.count_capacity_samples() == 0


# -- bad files: one line naming the problem, exit 2, nothing stored (SPEC §7) -----------------------

HEADER = b"service,checked_at,ok,latency_ms\napi,2026-11-01T00:00:00Z,true,12\n"
BAD_FILES = {
    "not utf-8": (HEADER + b"api,2026-11-01T00:01:00Z,true,1\xff3\n", ":3: not UTF-8 text (byte 0xff at column 32)"),
    "latin-1 header": (b"s\xe9rvice,checked_at\n", ":1: not UTF-8 text (byte 0xe9 at column 2)"),
    "field over 128 KiB": (
        HEADER + b"api,2026-11-01T00:01:00Z,true,1\n" + b"x" * (129 * 1024) + b",2026-11-01T00:02:00Z,true,1\n",
        ":4: not a valid CSV row: a field is longer than 128 KiB",
    ),
    "NUL byte": (HEADER + b"a\x00pi,2026-11-01T00:01:00Z,true,1\n", ":3: service: contains a NUL byte"),
    "NUL in free text": (
        b"service,checked_at,ok,latency_ms,error\napi,2026-11-01T00:01:00Z,false,,bo\x00om\n",
        ":2: error: contains a NUL byte",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_file_that_is_not_utf8_csv_is_one_line_and_exit_2(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, expected = BAD_FILES[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    assert run(["probes", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{path}{expected}"]
    assert store_env.count_probe_results() == 0


@pytest.mark.parametrize(
    ("when", "year"), [("2206-11-01T00:05:00Z", 2206), ("0001-01-01T00:00:00+00:00", 1), ("1969-12-31T23:59:59Z", 1969)]
)
def test_a_time_outside_1970_2200_is_refused_naming_the_line(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], when: str, year: int
) -> None:
    path = tmp_path / "typo.csv"
    path.write_text(f"service,checked_at,ok,latency_ms\napi,2026-11-01T00:00:00Z,true,12\napi,{when},true,12\n")
    assert run(["probes", "import", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{path}:3: checked_at: year {year} is outside 1970\u20132200"]
    assert store_env.count_probe_results() == 0  # all or nothing: line 2 is not written either
    capacity = tmp_path / "cap.csv"
    capacity.write_text(f"metric,ts,value\ndisk,2026-11-01T00:00:00Z,1\ndisk,{when},2\n")
    assert run(["capacity", "import", str(capacity)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{capacity}:3: ts: year {year} is outside 1970\u20132200"]
    assert store_env.count_capacity_samples() == 0


def test_the_edges_of_the_accepted_years_import(store_env: OpsStore, tmp_path: Path) -> None:
    path = tmp_path / "edges.csv"
    path.write_text("metric,ts,value\ndisk,1970-01-01T00:00:00Z,1\ndisk,2200-12-31T23:59:59-05:00,2\n")
    assert run(["capacity", "import", str(path)]) == 0
    assert store_env.count_capacity_samples() == 2


@pytest.mark.parametrize(
    "url",
    ["postgresql://ops:Hunter%zz2Secret@127.0.0.1:9/opsflow", "postgresql://ops:Hunter@2Secret@127.0.0.1:9/opsflow"],
)
def test_a_store_url_that_does_not_parse_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("metric,ts,value\ndisk,2026-11-01T00:00:00Z,1\n")
    monkeypatch.setenv("OPSFLOW_STORE_URL", url)
    assert run(["capacity", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("the ops store URL ($OPSFLOW_STORE_URL) "), err
    assert "Hunter" not in err and "2Secret" not in err


# -- export: raw data out, in the import's format --------------------------------------------------


def stored_probe_rows(store: OpsStore) -> list[tuple[object, ...]]:
    with store.connection() as conn:
        return conn.execute(
            "select service, checked_at, ok, latency_ms, status_code, error from opsflow.probe_results order by 1, 2"
        ).fetchall()


def test_an_export_imports_back_into_another_store_unchanged(
    store_env: OpsStore,
    pg_server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import psycopg

    from opsflow.embedded import url_with_database

    source = tmp_path / "history.csv"
    source.write_text(
        "service,checked_at,ok,latency_ms,status_code,error\n"
        "api,2026-11-01T00:00:00Z,true,12.345678901,200,\n"
        'api,2026-11-01T01:00:30.123456+01:00,false,,503,"HTTP 503: ""busy"", retry\nlater"\n'
        "web,2026-10-31T23:59:59Z,true,0.5,,\n"
        "web,2026-11-01T00:00:00Z,true,67.74394199999278,200,\n"
    )
    assert run(["probes", "import", str(source)]) == 0
    exported = tmp_path / "out" / "export.csv"
    exported.parent.mkdir()
    capsys.readouterr()
    assert run(["probes", "export", "--output", str(exported)]) == 0
    assert capsys.readouterr().out.strip() == f"{exported}: 4 probe results written"
    lines = exported.read_text().splitlines()
    assert lines[0] == "service,checked_at,ok,latency_ms,status_code,error"
    # Latency to at most 3 decimals: a timer's float noise stays out of the file.
    assert lines[1] == "api,2026-11-01T00:00:00Z,true,12.346,200,"
    assert lines[2].startswith("api,2026-11-01T00:00:30.123456Z,false,,503,")
    assert lines[-2:] == ["web,2026-10-31T23:59:59Z,true,0.5,,", "web,2026-11-01T00:00:00Z,true,67.744,200,"]
    assert sorted(p.name for p in exported.parent.iterdir()) == ["export.csv"]  # no partial file left
    umask = os.umask(0)
    os.umask(umask)
    assert exported.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0600

    name = "t_export_roundtrip"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name}")
        conn.execute(f"create database {name}")
    try:
        other = OpsStore(url_with_database(pg_server_url, name))
        monkeypatch.setenv("OPSFLOW_STORE_URL", other.url)
        assert run(["probes", "import", str(exported)]) == 0
        # Unchanged but for the latency's rounding; exported again, the same file byte for byte.
        assert stored_probe_rows(other) == [
            (*row[:3], None if row[3] is None else round(row[3], 3), *row[4:]) for row in stored_probe_rows(store_env)
        ]
        again = tmp_path / "again.csv"
        capsys.readouterr()
        assert run(["probes", "export", "--output", str(again)]) == 0
        assert again.read_bytes() == exported.read_bytes()
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def test_export_filters_by_service_and_time_and_streams_to_stdout(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["probes", "import", str(write_probe_csv(tmp_path / "probes.csv", 30))]) == 0
    capsys.readouterr()
    # svc-1 has a result every minute from T0; [T0 + 2 min, T0 + 5 min) holds three of them.
    window = ["--from", "2026-10-01T00:02:00Z", "--to", "2026-10-01T02:05:00+02:00"]
    assert run(["probes", "export", "--service", "svc-1", *window]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["service"], r["checked_at"]) for r in rows] == [
        ("svc-1", "2026-10-01T00:02:00Z"),
        ("svc-1", "2026-10-01T00:03:00Z"),
        ("svc-1", "2026-10-01T00:04:00Z"),
    ]
    assert run(["probes", "export", "--service", "svc-0", "--service", "svc-2"]) == 0
    both = capsys.readouterr()
    assert len(both.out.splitlines()) == 1 + 20 and both.err == ""
    # A named service with nothing stored is said on stderr; still exit 0 and a valid, header-only CSV.
    assert run(["probes", "export", "--service", "nosuch"]) == 0
    none = capsys.readouterr()
    assert none.out.splitlines() == ["service,checked_at,ok,latency_ms,status_code,error"]
    assert none.err == "no stored results for service 'nosuch'\n"
    assert run(["probes", "export", "--service", "svc-1", "--service", "nosuch", *window]) == 0
    some = capsys.readouterr()
    assert len(list(csv.DictReader(some.out.splitlines()))) == 3
    assert some.err == "no stored results for service 'nosuch' from 2026-10-01T00:02:00Z to 2026-10-01T02:05:00+02:00\n"
    assert run(["probes", "export", "--service", "svc-1", "--from", "2027-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().err == "no stored results for service 'svc-1' from 2027-01-01T00:00:00Z\n"


def test_export_refuses_bad_times_and_writes_nothing_when_the_store_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["probes", "export", "--from", "yesterday"]) == 2
    assert "--from: expected an ISO 8601 time" in capsys.readouterr().err
    assert run(["probes", "export", "--from", "2026-11-02", "--to", "2026-11-01"]) == 2
    assert "is not before --to" in capsys.readouterr().err
    assert run(["probes", "export", "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert run(["probes", "export", "--output", str(tmp_path / "missing" / "x.csv")]) == 2
    assert "no directory" in capsys.readouterr().err
    monkeypatch.setenv("OPSFLOW_STORE_URL", f"postgresql://ops:s3cret@/opsflow?host={tmp_path}&port=9")
    target = tmp_path / "export.csv"
    assert run(["probes", "export", "--output", str(target)]) == 3
    assert "s3cret" not in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- streaming: memory flat with the file's size, all or nothing across COPY chunks (SPEC §7) --------


def import_peak_rss_mb(path: Path, kind: str = "probes") -> float:
    """Peak RSS in MB of ``opsflow KIND import PATH`` run as its own process, as it measured itself
    (``VmHWM`` at exit). Not ``wait4``'s ru_maxrss: Linux carries the parent's peak into a child across
    fork and exec, so under a big pytest both imports would read pytest's size and the test could not fail."""
    from bench.history_import import peak_rss_mb

    return peak_rss_mb(["opsflow", kind, "import", str(path)], dict(os.environ))


def test_an_import_streams_its_memory_does_not_grow_with_the_file(store_env: OpsStore, tmp_path: Path) -> None:
    # 200,000 rows (~10 MB): holding them as Python objects took ~13x the file (a 43 MB CSV peaked at 552 MB).
    small = write_probe_csv(tmp_path / "small.csv", 2_000, services=5)
    big = write_probe_csv(tmp_path / "big.csv", 200_000, services=5)
    assert big.stat().st_size > 9_000_000
    small_peak = import_peak_rss_mb(small)
    big_peak = import_peak_rss_mb(big)
    assert store_env.count_probe_results() == 200_000  # the small file's rows are the big one's first
    assert big_peak - small_peak < 15, f"peak RSS {small_peak:.0f} MB for 2,000 rows, {big_peak:.0f} MB for 200,000"


def test_capacity_import_streams_too(store_env: OpsStore, tmp_path: Path) -> None:
    def samples(path: Path, rows: int) -> Path:
        with path.open("w") as handle:
            handle.write("metric,ts,value\n")
            for index in range(rows):
                handle.write(f"m-{index % 50},{(T0 + timedelta(hours=index // 50)).isoformat()},{index}.5\n")
        return path

    small_peak = import_peak_rss_mb(samples(tmp_path / "small.csv", 2_000), "capacity")
    big_peak = import_peak_rss_mb(samples(tmp_path / "big.csv", 250_000), "capacity")
    assert store_env.count_capacity_samples() == 250_000
    assert big_peak - small_peak < 15, f"peak RSS {small_peak:.0f} MB for 2,000 rows, {big_peak:.0f} MB for 250,000"


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """COPY chunks of 1,000 rows, so a few thousand rows span several of them."""
    monkeypatch.setattr(store_module, "IMPORT_CHUNK_ROWS", 1_000)
    return 1_000


def test_a_row_the_store_refuses_after_several_chunks_leaves_nothing_written(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], small_chunks: int
) -> None:
    # A constraint of the store's that the file does not know: PostgreSQL refuses the last row only.
    with store_env.connection() as conn:
        conn.execute("alter table opsflow.probe_results add constraint no_svc_2 check (service <> 'svc-2')")
    path = tmp_path / "probes.csv"
    write_probe_csv(path, 5_000, services=2)
    with path.open("a") as handle:
        handle.write("svc-2,2026-12-01T00:00:00Z,true,1,200,\n")
    assert run(["probes", "import", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "opsflow: the ops store refused the probe results, nothing written:"
        ' new row for relation "probe_results_2026_12" violates check constraint "no_svc_2"'
    ], err
    assert store_env.count_probe_results() == 0
    with store_env.connection() as conn:  # not even the partitions of the months it would have filled
        partitions = conn.execute(
            "select count(*) from pg_inherits where inhparent = 'opsflow.probe_results'::regclass"
        )
        assert partitions.fetchone() == (0,)


def test_the_store_lost_in_the_middle_of_the_copy_leaves_nothing_written(
    store_env: OpsStore, pg_url: str, tmp_path: Path, small_chunks: int
) -> None:
    path = write_probe_csv(tmp_path / "probes.csv", 5_000)
    check_probe_csv(path)
    sent = 0

    def rows_then_kill() -> Iterator[tuple[int, ProbeRow]]:
        nonlocal sent
        for pair in probe_rows(path):
            sent += 1
            if sent == 2_500:  # two chunks copied, the third under way: its server process is killed
                with psycopg.connect(pg_url, autocommit=True) as other:
                    killed = other.execute(
                        """select pg_terminate_backend(pid) from pg_stat_activity
                           where datname = current_database() and pid <> pg_backend_pid()
                             and query like 'copy probe_import%'"""
                    ).fetchall()
                assert killed == [(True,)]
            yield pair

    with pytest.raises(StoreUnavailable, match=r"^ops store lost during the import, nothing written: "):
        store_env.import_probe_results(rows_then_kill(), source=str(path))
    assert 2_500 <= sent < 5_000  # stopped at the loss, the rest of the file not read
    assert store_env.count_probe_results() == 0


def test_a_file_that_turns_bad_between_the_passes_leaves_nothing_written(
    store_env: OpsStore, tmp_path: Path, small_chunks: int
) -> None:
    path = write_probe_csv(tmp_path / "probes.csv", 3_500)
    assert check_probe_csv(path) == 3_500
    with path.open("a") as handle:  # appended while the first pass was done: found by the second
        handle.write("api,2026-11-01T00:05:00Z,maybe,12,200,\n")
    with pytest.raises(CsvProblems, match=r":3502: ok: expected true or false, got 'maybe'"):
        store_env.import_probe_results(probe_rows(path), source=str(path))
    assert store_env.count_probe_results() == 0


def test_repeats_in_the_file_across_chunks_are_dropped_or_refused_by_the_store(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], small_chunks: int
) -> None:
    path = write_probe_csv(tmp_path / "probes.csv", 3_000)
    lines = path.read_text().splitlines(keepends=True)
    # Line 2 again at the end (an exact repeat, 2 chunks later): dropped, counted once.
    path.write_text("".join([*lines, lines[1]]))
    assert run(["probes", "import", str(path)]) == 0
    assert "3000 probe results read, 3000 new, 0 already stored" in capsys.readouterr().out
    # Line 3's key again with other values, twice: both named, with the line that has the key first.
    changed = lines[2].replace(",true,", ",false,", 1)
    assert changed != lines[2]
    path.write_text("".join([*lines, changed, lines[1], changed]))
    assert run(["probes", "import", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:3002: row repeats the key of line 3 with different values",
        f"{path}:3004: row repeats the key of line 3 with different values",
    ]
    assert store_env.count_probe_results() == 3_000


def test_capacity_repeats_in_the_file_are_dropped_or_refused(
    store_env: OpsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cap.csv"
    path.write_text("metric,ts,value\ndisk,2026-11-01T00:00:00Z,1\ndisk,2026-11-01T01:00:00+01:00,1\n")
    assert run(["capacity", "import", str(path)]) == 0  # one instant, written two ways
    assert "1 samples read, 1 new, 0 updated, 0 already stored" in capsys.readouterr().out
    path.write_text(
        "metric,ts,value\ndisk,2026-11-01T00:00:00Z,1\ncpu,2026-11-01T00:00:00Z,3\ndisk,2026-11-01T00:00:00Z,2\n"
    )
    assert run(["capacity", "import", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"{path}:4: row repeats the key of line 2 with different values"
    assert store_env.count_capacity_samples() == 1


def test_an_import_refreshes_the_rollups_of_configured_services_and_warns_of_others(
    store_env: OpsStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "opsflow.yaml"
    config.write_text("services:\n  - name: svc-0\n    url: http://127.0.0.1:9/health\n    interval: 60s\n")
    path = write_probe_csv(tmp_path / "probes.csv", 3 * 180)  # three services, 3 hours each
    assert run(["probes", "import", "--config", str(config), str(path)]) == 0
    assert "importing history of services not in the config: svc-1, svc-2" in caplog.messages
    with store_env.connection() as conn:
        hours = conn.execute("select service, count(*) from opsflow.probe_hourly group by service").fetchall()
    assert dict(hours).keys() == {"svc-0"}
    assert dict(hours)["svc-0"] >= 3
