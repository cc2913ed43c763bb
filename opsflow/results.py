"""Result models shared by every routine (SPEC §5).

A routine returns one :class:`RoutineResult`: a list of items (a backup set, a
service, a metric...), each holding named checks. Status is derived, never set
by hand above the check level, so the rules hold everywhere:

- an item's status is its worst check's;
- a routine's status is its worst item's;
- ordering is ``ok < warn < fail < error``.

>>> item = Item(name="orders-db", checks=[
...     Check(check="present", status="ok", detail="12 backups"),
...     Check(check="fresh", status="fail", detail="newest backup is 31h old, limit 26h",
...           observed=111600, expected=93600)])
>>> result = RoutineResult(routine="backup-verification",
...                        as_of=datetime(2026, 11, 22, 6, tzinfo=UTC), items=[item])
>>> result.status, result.summary.fail, result.exit_code
('fail', 1, 1)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

Status = Literal["ok", "warn", "fail", "error"]

STATUS_RANK: dict[str, int] = {"ok": 0, "warn": 1, "fail": 2, "error": 3}

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


def worst(statuses: Iterable[Status], default: Status = "ok") -> Status:
    """The most severe status of ``statuses`` (``default`` when there are none).

    >>> worst(["ok", "warn", "ok"])
    'warn'
    """
    return max(statuses, key=STATUS_RANK.__getitem__, default=default)


def format_instant(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, seconds precision unless sub-second.

    >>> format_instant(datetime(2026, 11, 22, 6, tzinfo=UTC))
    '2026-11-22T06:00:00Z'
    """
    utc = moment.astimezone(UTC)
    text = utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


class Check(BaseModel):
    """One named check of an item; routines may attach more fields than these five."""

    model_config = ConfigDict(extra="allow")

    check: str
    status: Status
    detail: str = ""
    observed: Any = None
    expected: Any = None


class Item(BaseModel):
    """One thing a routine looked at. ``status`` is the worst of its checks."""

    name: str
    status: Status = "ok"
    checks: list[Check] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _status_from_checks(self) -> Item:
        if self.checks:
            self.status = worst(c.status for c in self.checks)
        return self

    def check_named(self, name: str) -> Check | None:
        """The check called ``name``, if this item has one."""
        return next((c for c in self.checks if c.check == name), None)


class Summary(BaseModel):
    """How many items ended in each status."""

    ok: int = 0
    warn: int = 0
    fail: int = 0
    error: int = 0


class Period(BaseModel):
    """The period a report covers: ``[start, end)``, labelled as the routine names it (``2026-10``)."""

    label: str
    start: datetime
    end: datetime

    @field_serializer("start", "end")
    def _serialize_bounds(self, value: datetime) -> str:
        return format_instant(value)


class RoutineResult(BaseModel):
    """What one run of a routine found: the document behind ``--json``.

    ``period`` (reports) and ``outputs`` (files written, by kind) appear only where a
    routine has them; ``error`` only when the routine could not complete (exit 3).
    """

    routine: str
    status: Status = "ok"
    as_of: datetime
    flow_run_id: str | None = None
    summary: Summary = Field(default_factory=Summary)
    items: list[Item] = Field(default_factory=list)
    period: Period | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    error: str | None = None

    @field_validator("as_of")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("as_of must carry a timezone")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _derive(self) -> RoutineResult:
        counts = {status: 0 for status in STATUS_RANK}
        for item in self.items:
            counts[item.status] += 1
        self.summary = Summary(**counts)
        self.status = "error" if self.error else worst(item.status for item in self.items)
        return self

    @field_serializer("as_of")
    def _serialize_as_of(self, value: datetime) -> str:
        return format_instant(value)

    @property
    def exit_code(self) -> int:
        """0 when every item is ok or warn, 1 when any is fail or error, 3 when the routine could not
        complete (SPEC §5)."""
        if self.error:
            return EXIT_INCOMPLETE
        return EXIT_FINDINGS if STATUS_RANK[self.status] >= STATUS_RANK["fail"] else EXIT_OK

    def to_json(self) -> str:
        """The single JSON document ``--json`` prints (optional fields only when set)."""
        unset = {name for name in ("period", "error") if getattr(self, name) is None}
        if not self.outputs:
            unset.add("outputs")
        return self.model_dump_json(exclude=unset)
