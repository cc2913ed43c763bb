"""Parse and validate history CSV files before anything is written (pure, no I/O but the read).

Two formats (SPEC §5):

- probes: ``service,checked_at,ok,latency_ms`` with optional ``status_code,error``;
- capacity: ``metric,ts,value``.

An import reads the file twice, streaming, so memory stays flat with its size (SPEC §7):
a first pass validates every row (a file with any bad row raises :class:`CsvProblems`
naming each bad line, so the caller imports nothing from it), a second one yields the
rows, with their line numbers, to the store::

    check_probe_csv(path)                  # 130000 rows, or CsvProblems
    store.import_probe_results(probe_rows(path), source=str(path))

A key repeated with different values is found by the store (it sees every row at once
without holding them here) and said the same way: :func:`repeated_key_problems`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from opsflow.errors import UsageError

MAX_REPORTED_PROBLEMS = 20
#: Times outside these years are refused (SPEC §7): a typo (2206, 0001) must not reach the store.
MIN_YEAR, MAX_YEAR = 1970, 2200
#: The longest field a history CSV may hold (csv's own limit, said as one line rather than a traceback).
MAX_FIELD_BYTES = 128 * 1024


class ProbeRow(NamedTuple):
    """One probe result, in the column order of ``opsflow.probe_results``."""

    service: str
    checked_at: datetime
    ok: bool
    latency_ms: float | None
    status_code: int | None
    error: str | None


class CapacityRow(NamedTuple):
    """One metric sample, in the column order of ``opsflow.capacity_samples``."""

    metric: str
    ts: datetime
    value: float


class CsvProblems(UsageError):
    """A file that cannot be imported; ``problems`` are ``FILE:LINE: column: message`` lines."""

    def __init__(self, problems: list[str], total: int) -> None:
        self.problems = problems
        self.total = total
        more = f"\n... and {total - len(problems)} more bad rows" if total > len(problems) else ""
        super().__init__("\n".join(problems) + more)


@dataclass(frozen=True)
class _Column:
    name: str
    required: bool
    parse: Callable[[str], object]


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _optional_text(value: str) -> str | None:
    return value.strip() or None


def _instant(value: str) -> datetime:
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time with offset, got {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset (write e.g. {text}Z or {text}+00:00)")
    year_problem = outside_years(moment)
    if year_problem:
        raise ValueError(year_problem)
    return moment


def outside_years(moment: datetime) -> str | None:
    """Why ``moment`` is not a time opsflow accepts (SPEC §7: years 1970–2200), or None.

    >>> outside_years(datetime(2206, 1, 1))
    'year 2206 is outside 1970–2200'
    """
    if MIN_YEAR <= moment.year <= MAX_YEAR:
        return None
    return f"year {moment.year} is outside {MIN_YEAR}\u2013{MAX_YEAR}"


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"expected true or false, got {value.strip()!r}")


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value.strip()!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value.strip()!r}")
    return number


def _optional_latency(value: str) -> float | None:
    if not value.strip():
        return None
    latency = _number(value)
    if latency < 0:
        raise ValueError(f"latency must not be negative, got {value.strip()}")
    return latency


def _optional_status_code(value: str) -> int | None:
    text = value.strip()
    if not text:
        return None
    if not text.isdigit() or not 100 <= int(text) <= 599:
        raise ValueError(f"expected an HTTP status code 100-599, got {text!r}")
    return int(text)


PROBE_COLUMNS = (
    _Column("service", True, _text),
    _Column("checked_at", True, _instant),
    _Column("ok", True, _bool),
    _Column("latency_ms", True, _optional_latency),
    _Column("status_code", False, _optional_status_code),
    _Column("error", False, _optional_text),
)
CAPACITY_COLUMNS = (
    _Column("metric", True, _text),
    _Column("ts", True, _instant),
    _Column("value", True, _number),
)


def _rows(path: Path, columns: tuple[_Column, ...]) -> Iterator[tuple[int, tuple[object, ...]]]:
    """Yield ``(line, parsed values)`` of each good row in ``columns`` order, streaming; after the last
    row, raise CsvProblems if any row was bad (a header problem, bad encoding or CSV at once)."""
    problems: list[str] = []
    total_bad = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise CsvProblems([f"{path}:1: the file is empty; expected a header row"], 1)
            names = [h.strip() for h in header]
            known = {c.name for c in columns}
            header_problems = [f"{path}:1: {n}: unknown column" for n in names if n not in known]
            header_problems += [
                f"{path}:1: {c.name}: required column is missing" for c in columns if c.required and c.name not in names
            ]
            if header_problems:
                raise CsvProblems(header_problems, len(header_problems))
            position = {name: index for index, name in enumerate(names)}
            getters = [(c.name, c.parse, position.get(c.name)) for c in columns]
            width = len(names)
            for record in reader:
                line = reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                if len(record) != width:
                    total_bad += 1
                    if len(problems) < MAX_REPORTED_PROBLEMS:
                        problems.append(f"{path}:{line}: row has {len(record)} fields, the header has {width}")
                    continue
                values: list[object] = []
                bad = False
                for name, parse, index in getters:
                    raw = record[index] if index is not None else ""
                    try:
                        if "\0" in raw:
                            raise ValueError("contains a NUL byte")
                        values.append(parse(raw))
                    except ValueError as exc:
                        if not bad:
                            total_bad += 1
                        bad = True
                        if len(problems) < MAX_REPORTED_PROBLEMS:
                            problems.append(f"{path}:{line}: {name}: {exc}")
                if not bad:
                    yield line, tuple(values)
        except UnicodeDecodeError:
            raise CsvProblems([_not_utf8(path)], 1) from None
        except csv.Error as exc:
            message = str(exc)
            if "field larger than field limit" in message:
                message = f"a field is longer than {MAX_FIELD_BYTES // 1024} KiB"
            raise CsvProblems([f"{path}:{reader.line_num}: not a valid CSV row: {message}"], 1) from None
    if total_bad:
        raise CsvProblems(problems, total_bad)


def _count(rows: Iterator[object]) -> int:
    """How many rows ``rows`` yields, keeping none of them."""
    count = 0
    for _ in rows:
        count += 1
    return count


def _not_utf8(path: Path) -> str:
    """``FILE:LINE: not UTF-8 text`` for the first line that does not decode (read again, line by line)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    return f"{path}: not UTF-8 text"


def repeated_key_problems(source: str | Path, conflicts: list[tuple[int, int]], total: int) -> CsvProblems:
    """The problem of rows that repeat an earlier row's key with different values: ``conflicts`` are
    ``(line, line of the key's first row)``, the first few of ``total``."""
    return CsvProblems(
        [f"{source}:{line}: row repeats the key of line {first} with different values" for line, first in conflicts],
        total,
    )


def check_probe_csv(path: Path) -> int:
    """First pass of a probe import: validate every row, keeping none; return how many there are
    (repeats included). Raises :class:`CsvProblems` on any bad row."""
    return _count(_rows(path, PROBE_COLUMNS))


def probe_rows(path: Path) -> Iterator[tuple[int, ProbeRow]]:
    """Second pass of a probe import: ``(line, row)`` of each row, streaming (raises :class:`CsvProblems`
    at the end if the file turned bad since it was checked)."""
    for line, values in _rows(path, PROBE_COLUMNS):
        yield line, ProbeRow(*values)  # type: ignore[arg-type]


def check_capacity_csv(path: Path) -> int:
    """First pass of a capacity import: validate every row, keeping none; return how many there are."""
    return _count(_rows(path, CAPACITY_COLUMNS))


def capacity_rows(path: Path) -> Iterator[tuple[int, CapacityRow]]:
    """Second pass of a capacity import: ``(line, sample)`` of each row, streaming."""
    for line, values in _rows(path, CAPACITY_COLUMNS):
        yield line, CapacityRow(*values)  # type: ignore[arg-type]


def _deduplicated(
    path: Path, rows: Iterator[tuple[int, tuple[object, ...]]], key_size: int
) -> list[tuple[object, ...]]:
    """Drop exact repeats; two rows with one key but different values are a problem."""
    seen: dict[tuple[object, ...], tuple[int, tuple[object, ...]]] = {}
    conflicts: list[tuple[int, int]] = []
    total = 0
    for line, values in rows:
        key = values[:key_size]
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = (line, values)
        elif earlier[1] != values:
            total += 1
            if len(conflicts) < MAX_REPORTED_PROBLEMS:
                conflicts.append((line, earlier[0]))
    if total:
        raise repeated_key_problems(path, conflicts, total)
    return [values for _, values in seen.values()]


def read_probe_csv(path: Path) -> list[ProbeRow]:
    """All probe rows of a small file, validated and in memory (an import streams instead:
    :func:`check_probe_csv`, :func:`probe_rows`); raises :class:`CsvProblems` on any bad row."""
    return [ProbeRow(*values) for values in _deduplicated(path, _rows(path, PROBE_COLUMNS), 2)]  # type: ignore[arg-type]


def read_capacity_csv(path: Path) -> list[CapacityRow]:
    """All capacity samples of a small file, validated and in memory (an import streams instead);
    raises :class:`CsvProblems` on any bad row."""
    return [CapacityRow(*values) for values in _deduplicated(path, _rows(path, CAPACITY_COLUMNS), 2)]  # type: ignore[arg-type]
