"""The Great Expectations expectations a config may name, without importing GX (it takes seconds).

``gx_expectations.json`` beside this module is a snapshot of GX's registry: each expectation's required
and optional arguments. Loading a config checks expectation names and argument names against it, so
``opsflow check-config`` answers at once with ``FILE:LINE: key:`` errors; the values themselves are judged
by GX's own models before a ``data-quality`` run (:func:`opsflow.config.expectation_problems`). A test keeps
the snapshot equal to the installed GX; after upgrading GX, rewrite it::

    uv run python -m opsflow.expectations --write
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).with_name("gx_expectations.json")
#: Arguments GX sets itself on every expectation: never taken from the config.
RESERVED = frozenset({"id", "batch_id", "rendered_content", "meta"})

Problem = tuple[tuple[str, ...], str]  # (key path below the expectation's name, message)


@cache
def catalog() -> dict[str, Any]:
    """``{"common": [...], "expectations": {name: {"required": [...], "optional": [...]}}}``."""
    return json.loads(CATALOG.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def arguments_of(name: str) -> tuple[list[str], list[str]] | None:
    """The required and the optional arguments of expectation ``name`` (without the reserved ones);
    None when GX has no such expectation."""
    known = catalog()["expectations"].get(name)
    if known is None:
        return None
    optional = [arg for arg in [*known["optional"], *catalog()["common"]] if arg not in RESERVED]
    return list(known["required"]), optional


def expectation_problems(name: str, kwargs: Mapping[str, Any]) -> list[Problem]:
    """An unknown expectation (with the closest name), a reserved, unknown or missing argument."""
    arguments = arguments_of(name)
    if arguments is None:
        close = difflib.get_close_matches(name, catalog()["expectations"], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [((), f"unknown Great Expectations expectation {name!r}{hint}")]
    required, optional = arguments
    problems: list[Problem] = [((arg,), "required key is missing") for arg in required if arg not in kwargs]
    for key in map(str, kwargs):
        if key in RESERVED:
            problems.append(((key,), f"{key!r} is set by opsflow, not in the config"))
        elif key not in required and key not in optional:
            close = difflib.get_close_matches(key, [*required, *optional], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; it takes: {', '.join([*required, *optional])}"
            problems.append(((key,), f"unknown argument {key!r}{hint}"))
    return problems


def snapshot() -> dict[str, Any]:
    """The catalog as the installed Great Expectations has it (imports GX)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations  # noqa: F401  (registers the expectations)
        from great_expectations.expectations.registry import (
            get_expectation_impl,
            list_registered_expectation_implementations,
        )

        names = sorted(list_registered_expectation_implementations())
        fields = {name: get_expectation_impl(name).__fields__ for name in names}
    common = sorted(set.intersection(*(set(f) for f in fields.values()))) if fields else []
    expectations = {
        name: {
            "required": sorted(arg for arg, info in args.items() if info.required),
            "optional": sorted(arg for arg, info in args.items() if not info.required and arg not in common),
        }
        for name, args in fields.items()
    }
    return {"common": common, "expectations": expectations}


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m opsflow.expectations --write")
    CATALOG.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {CATALOG}")
