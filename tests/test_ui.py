"""``opsflow demo`` serving, as an ops lead sees it and until it is stopped.

In a real browser — Debian's chromium, driven by Playwright through ``executable_path`` (no browser
download exists here) — the deployments page lists every deployment with its schedule and the red run's
page shows its failing task and why; screenshots are kept as test artifacts under
``$OPSFLOW_TEST_ARTIFACTS`` (default ``.test-artifacts/ui``), the assertions are on the DOM. Then the
schedules go on on their own (the uptime probe's interval schedule fires a second run) until SIGINT,
which stops everything the demo started (the last test: it ends the module's demo)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.demo_services import stop_marked
from tests.test_demo import FINAL_TYPES, REPO, _assert_nothing_left, _environ, _ports
from tests.test_schedules import prefect_api

CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes say: without the background-networking flags chromium keeps dialling out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``opsflow demo`` running: the UI's address and the red run's page once its first runs are final, and
    what the last test needs to stop it (the process, its output, its home)."""
    home = tmp_path_factory.mktemp("ui") / "home"
    errors = home.parent / "demo.err"
    errors_file = errors.open("w")
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "opsflow", "demo"],
        cwd=REPO,
        env=_environ(home),
        stdout=subprocess.PIPE,
        stderr=errors_file,
        text=True,
    )
    threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while "backup-verification/daily" not in "".join(lines).split("First runs", 1)[-1]:
            assert process.poll() is None and time.monotonic() < deadline, errors.read_text()[-3000:]
            time.sleep(0.5)
        output = "".join(lines)
        ui = re.search(r"The Prefect UI: (http://127\.0\.0\.1:\d+)", output)
        red = re.search(r"the red run\s+(\S+)", output)
        assert ui is not None and red is not None, output
        yield {"ui": ui[1], "red_run": red[1], "process": process, "lines": lines, "home": home, "errors": errors}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        errors_file.close()
        stop_marked(home / "demo")


@pytest.fixture(scope="module")
def browser(demo: dict[str, Any]) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str) -> Path:
    folder = Path(os.environ.get("OPSFLOW_TEST_ARTIFACTS") or REPO / ".test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


UI_PAGE_SIZE = 10  # rows per page of the Prefect 3.8 UI's deployments table


def test_the_deployments_page_lists_every_deployment_with_its_schedule(demo: dict[str, Any], browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{demo['ui']}/deployments")
    page.get_by_text(f"{len(DEPLOYMENTS)} Deployments").wait_for(timeout=30_000)
    screenshot(page, "deployments")
    rows = page.locator("tbody tr")
    # The UI lists 10 deployments a page: the heading counts them all, the first page shows 10 of them.
    assert rows.count() == min(len(DEPLOYMENTS), UI_PAGE_SIZE)
    expected = {(entry["name"], entry["entrypoint"].rsplit(":", 1)[1].replace("_", "-")) for entry in DEPLOYMENTS}
    deadline = time.monotonic() + 30
    while True:  # each row's flow name is fetched after the row itself: read once they are all in
        listed = {tuple(row.inner_text().split()[:2]) for row in rows.all()}  # (deployment, flow) per row
        if listed <= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert listed <= expected and len(listed) == rows.count()
    body = page.inner_text("body")
    assert "Every minute" in body  # uptime-probe/every-minute
    assert "At 06:00 AM every day" in body  # backup-verification/daily, sla-report/daily
    assert "Ready" in body  # served: not "Not Ready"


def test_the_red_runs_page_shows_its_failing_task_and_why(demo: dict[str, Any], browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(demo["red_run"])
    page.get_by_text("crm-db: fresh: newest backup is").wait_for(timeout=30_000)  # the run's ERROR line
    screenshot(page, "red-run")
    assert page.get_by_text("Failed", exact=True).first.is_visible()  # the run's state badge
    logs = page.inner_text("body")
    assert re.search(r"Finished in state Failed\('fresh: newest backup is \S+ old, limit 26h'\)", logs)
    assert "Traceback" not in logs

    page.get_by_text("Task Runs", exact=True).click()
    failing = page.get_by_text("verify[crm-db]")
    failing.first.wait_for(timeout=30_000)
    screenshot(page, "red-run-task-runs")
    tab = page.inner_text("body")
    assert "verify[shop-db]" in tab and "verify[crm-db]" in tab
    assert re.search(r"verify\[crm-db\][\s\S]{0,200}Failed", tab), tab[:2000]


def test_the_demo_serves_the_schedules_until_sigint(demo: dict[str, Any]) -> None:
    process, errors = demo["process"], demo["errors"]
    api = f"{demo['ui']}/api"
    deployments = prefect_api("POST", f"{api}/deployments/filter", {})
    [uptime] = [d for d in deployments if d["entrypoint"].endswith(":uptime_probe")]
    deadline = time.monotonic() + 150
    while True:
        finished = prefect_api(
            "POST",
            f"{api}/flow_runs/filter",
            {
                "deployments": {"id": {"any_": [uptime["id"]]}},
                "flow_runs": {"state": {"type": {"any_": FINAL_TYPES}}},
            },
        )
        if len(finished) >= 2:
            break
        assert process.poll() is None, errors.read_text()[-3000:]
        assert time.monotonic() < deadline, f"the uptime probe ran {len(finished)} times, not twice"
        time.sleep(2)
    assert any(run["auto_scheduled"] for run in finished)  # its interval schedule fired on its own

    ports = _ports("".join(demo["lines"]) + errors.read_text())
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0, errors.read_text()[-3000:]
    _assert_nothing_left(demo["home"], ports)
