"""Expiry check — daily: what expires soon — certificates, licenses, domains, contracts?

Every certificate under ``expiry.certificates`` (a ``tls: host:port`` or ``url:`` endpoint, read with SNI,
its chain included; or a PEM/DER file, every certificate of a bundle) and the certificate of every
``https://`` service under ``services:`` (an item named after the service), in task runs
``certificate[NAME]`` (20 batches past 20 endpoints); and every dated item under ``expiry.items``
(licenses, domains, contracts, API keys; no I/O), each expiring at the end of its day in the config's
timezone. Check ``expiry``: ``fail`` when expired or within ``fail_within``, ``warn`` within
``warn_within`` (per entry overridable). A certificate is read even when its chain does not verify (that
is a detail); an intermediate expiring before the leaf is a finding. An endpoint that cannot be reached
(after its retries) or a file that is not a certificate is that item's ``error``; the others are judged.
A ``warn`` goes to Slack and the webhook; a ``fail`` pages.

Schedule: daily at 08:00 (``prefect.yaml``). Needs: the ops store; network access to the endpoints.
Result: stored, alerted, and published under the artifact key ``expiry-check`` (ranked by days left).

    opsflow run expiry-check [--as-of 2026-12-05T08:00:00Z] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from flows._routine import Routine, RoutineRun, reason, routine_flow
from opsflow.results import Item
from reports.expiry import expiry_markdown
from tasks.expiry import (
    batch_label,
    certificate_batches,
    certificate_targets,
    certificates_task,
    dated_items,
    unreadable_item,
)
from tasks.routine import settle


def check_everything_that_expires(run: RoutineRun) -> list[Item]:
    """Certificates in batches of task runs, all at once; dated items computed here (no I/O)."""
    config = run.config
    futures = [
        (batch, certificates_task.submit(batch, run.now, batch_label(batch), config.timezone))
        for batch in certificate_batches(certificate_targets(config))
    ]
    items: list[Item] = []
    for batch, future in futures:
        checked, error = settle(future)
        items += checked if error is None else [unreadable_item(target, reason(error)) for target in batch]
    return items + dated_items(config, run.now)


ROUTINE = Routine(
    name="expiry-check",
    description="Certificates, licenses, domains and contracts: what expires within warn_within, what has expired.",
    work=check_everything_that_expires,
    report=expiry_markdown,
)

expiry_check = routine_flow(ROUTINE, __name__)
