"""The expiry engine: read certificates (TLS endpoints, PEM/DER files) and judge what expires (SPEC §5 expiry-check).

Plain functions do the work and the judging; one thin task reads a batch of
certificates under the one retry policy. Dated items (licenses, domains,
contracts) need no I/O and are judged directly::

    targets = certificate_targets(config)      # configured certificates + every HTTPS service
    items = check_certificates(targets, now, config.tzinfo)
    items += dated_items(config, now)

Rules (one place for them):

- ``days_left`` counts whole days, rounded down, and is negative once expired:
  a certificate from its ``notAfter`` instant, a dated item from the end of its
  day in the config's timezone (to the local day, whatever the DST shifts);
- check ``expiry`` (:func:`expiry_status`): ``fail`` when expired or
  ``days_left`` ≤ ``fail_within``, ``warn`` when ≤ ``warn_within``, else ``ok``;
- an endpoint's certificate is read even when its chain does not verify (the
  verification problem is part of the detail); a chain certificate expiring
  before the leaf is a finding that makes the status at least its own;
- an endpoint that cannot be reached, or a file that is not a certificate, is
  that item's ``error``; the other certificates of the batch are still judged.
"""

from __future__ import annotations

import _ssl  # the encoding constant of the private chain API (_sent_chain)
import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import Certificate, Config, DatedItem, Expiry
from opsflow.errors import OpsflowError
from opsflow.redact import redact
from opsflow.results import STATUS_RANK, Check, Item, Status, format_instant
from opsflow.units import format_duration
from tasks.probes import connection_error, host_port
from tasks.retry import IO_RETRIES, PermanentFailure, TransientFailure
from tasks.routine import failing_checks, finding_state

if TYPE_CHECKING:  # cryptography is imported where it is used: loading a flow stays fast
    from cryptography import x509

DAY = timedelta(days=1)
DAY_SECONDS = 86400.0
#: A certificate file is small; anything bigger is refused unread (a bundle of 1 MiB holds ~700 certificates).
MAX_FILE_BYTES = 1 << 20
#: Chain certificates looked at, leaf included. OpenSSL itself caps what a peer may send (100 KiB).
MAX_CHAIN_CERTS = 10
#: Connect and handshake time-out for a configured endpoint (a service's own ``timeout`` for a service).
DEFAULT_TIMEOUT = 10.0
#: Endpoints of one batch read at once (sockets wait; two shared cores are plenty).
MAX_PARALLEL = 8
#: Up to this many targets get a task run each (``certificate[mail-tls]``); more share this many batches.
CERTIFICATE_TASK_RUNS = 20

Source = Literal["tls", "file"]


@dataclass(frozen=True)
class CertificateTarget:
    """One certificate to read: an endpoint (``host``, ``port``, SNI ``server_name``) or a ``file``.
    ``warn_within``/``fail_within`` are seconds, the entry's own limits already applied."""

    name: str
    source: Source
    warn_within: float
    fail_within: float
    host: str | None = None
    port: int | None = None  # None: the configured URL's port is not a port (read as an error)
    server_name: str | None = None
    file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def where(self) -> str:
        """``host:port`` or the file, as messages name it."""
        if self.source == "file":
            return str(self.file)
        return host_port(self.host or "", self.port)


@dataclass(frozen=True)
class EndpointCerts:
    """What an endpoint sent: its certificate, the chain as sent (leaf first), and why the chain does
    not verify against the system's trust store for the name asked (None when it does)."""

    leaf: x509.Certificate
    chain: list[x509.Certificate]
    verify_error: str | None


# -- reading ----------------------------------------------------------------------------------


def _reading_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: the expiry is read also where the chain fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _sent_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The peer's certificates as it sent them (DER, leaf first), at most :data:`MAX_CHAIN_CERTS`."""
    leaf = tls.getpeercert(binary_form=True)
    chain: list[bytes] = []
    # Python 3.13 has a public get_unverified_chain(); 3.10-3.12 only the private one of the SSL object.
    public = getattr(tls, "get_unverified_chain", None)
    private = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    try:
        sent = (public or private or (lambda: []))() or []
        chain = [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in sent]
    except (AttributeError, ValueError, ssl.SSLError):
        chain = []  # the leaf alone: still its expiry
    if leaf and (not chain or chain[0] != leaf):
        chain = [leaf, *chain]
    return chain[:MAX_CHAIN_CERTS]


def _handshake(host: str, port: int, sni: str, timeout: float, context: ssl.SSLContext) -> list[bytes]:
    """Connect, shake hands with ``context`` (SNI ``sni``), return the chain sent. Raises
    ``ssl.SSLCertVerificationError`` as it is; a failure that may pass is a :class:`TransientFailure`,
    a handshake the peer refuses for good (no TLS there, no common protocol) a :class:`PermanentFailure`."""
    target = host_port(host, port)
    try:
        with (
            socket.create_connection((host.strip("[]"), port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            return _sent_chain(tls)
    except ssl.SSLCertVerificationError:
        raise
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError) as exc:  # cut short: may pass
        raise TransientFailure(f"TLSError: the handshake was cut short ({target}): {exc.reason or exc}") from None
    except ssl.SSLError as exc:
        raise PermanentFailure(f"TLSError: handshake failed ({target}): {exc.reason or exc}") from None
    except TimeoutError:
        raise TransientFailure(f"Timeout: no TLS handshake within {format_duration(timeout)} ({target})") from None
    except OSError as exc:
        raise TransientFailure(connection_error(exc, target)) from None
    except (ValueError, UnicodeError) as exc:  # a server name Python cannot send
        raise PermanentFailure(f"TLSError: cannot ask {target} for {sni!r}: {exc}") from None


def _parse_der_chain(ders: Sequence[bytes], where: str) -> list[x509.Certificate]:
    from cryptography import x509

    if not ders:
        raise PermanentFailure(f"TLSError: {where} sent no certificate")
    try:
        return [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError:
        raise PermanentFailure(f"TLSError: {where} sent a certificate that cannot be parsed") from None


def read_endpoint_chain(
    host: str,
    port: int,
    server_name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    verify_context: ssl.SSLContext | None = None,
) -> EndpointCerts:
    """The certificates ``host:port`` sends for ``server_name`` (SNI; the host when None), and whether
    they verify. One handshake when they verify against ``verify_context`` (the system's trust store and
    hostname check by default); a second, accepting anything, when they do not — so the expiry is
    read anyway and the verification problem (``self-signed certificate``, ``Hostname mismatch…``)
    is returned, not raised. Unreachable: :class:`TransientFailure`; no TLS there: :class:`PermanentFailure`."""
    sni = server_name or host.strip("[]")
    verifying = verify_context if verify_context is not None else ssl.create_default_context()
    verify_error: str | None = None
    try:
        ders = _handshake(host, port, sni, timeout, verifying)
    except ssl.SSLCertVerificationError as exc:
        verify_error = str(exc.verify_message or exc.reason or exc).rstrip(".")
        ders = _handshake(host, port, sni, timeout, _reading_context())
    chain = _parse_der_chain(ders, host_port(host, port))
    return EndpointCerts(leaf=chain[0], chain=chain, verify_error=verify_error)


def _parse_certificate_file(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, or the one DER certificate; [] when it is neither."""
    from cryptography import x509

    try:
        if b"-----BEGIN" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return []


def read_certificate_file(path: str | Path) -> list[x509.Certificate]:
    """The certificates of a PEM file (every one of a bundle, in file order) or a DER file. A missing,
    unreadable or oversized file, or one that holds no certificate, is a :class:`PermanentFailure`
    naming the file; an I/O error that may pass (a network filesystem) a :class:`TransientFailure`."""
    shown = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # the cap: never more than this in memory
    except FileNotFoundError:
        raise PermanentFailure(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise PermanentFailure(f"{shown}: a directory, not a certificate file") from None
    except PermissionError:
        raise PermanentFailure(f"{shown}: permission denied") from None
    except OSError as exc:
        raise TransientFailure(f"{shown}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PermanentFailure(f"{shown}: larger than {MAX_FILE_BYTES >> 20} MiB, not a certificate file")
    certificates = _parse_certificate_file(data)
    if not certificates:
        raise PermanentFailure(f"{shown}: not a PEM or DER certificate")
    return certificates


# -- judging ----------------------------------------------------------------------------------


def days_until(expires_at: datetime, now: datetime) -> int:
    """Whole days from ``now`` to ``expires_at``, rounded down: negative once it has passed.

    >>> t = datetime(2026, 12, 1, tzinfo=UTC)
    >>> days_until(t + timedelta(days=20, hours=23), t), days_until(t - timedelta(hours=1), t)
    (20, -1)
    """
    return (expires_at - now) // DAY


def expiry_status(days_left: int, warn_days: float, fail_days: float) -> Status:
    """The ``expiry`` check's status: ``fail`` when expired (``days_left`` < 0) or ``days_left`` ≤
    ``fail_days``, ``warn`` when ≤ ``warn_days``, else ``ok``.

    >>> [expiry_status(d, 30, 7) for d in (-1, 0, 7, 8, 30, 31)]
    ['fail', 'fail', 'fail', 'warn', 'warn', 'ok']
    """
    if days_left < 0 or days_left <= fail_days:
        return "fail"
    return "warn" if days_left <= warn_days else "ok"


def when(days_left: int, day: date) -> str:
    """How a detail says it: ``expires in 20 days (2026-12-25)``, ``expired 2 days ago (2026-11-20)``.

    >>> when(1, date(2026, 12, 2))
    'expires in 1 day (2026-12-02)'
    >>> when(0, date(2026, 12, 1)), when(-1, date(2026, 11, 30))
    ('expires in less than a day (2026-12-01)', 'expired less than a day ago (2026-11-30)')
    """
    if days_left >= 0:
        span = "less than a day" if days_left == 0 else f"{days_left} day{'' if days_left == 1 else 's'}"
        return f"expires in {span} ({day.isoformat()})"
    full = -days_left - 1  # days_left -1: it expired within the last day
    ago = "less than a day" if full == 0 else f"{full} day{'' if full == 1 else 's'}"
    return f"expired {ago} ago ({day.isoformat()})"


def _judged(days_left: int, warn_within: float, fail_within: float) -> tuple[Status, float]:
    """The status for ``days_left`` and the limit (days) it was judged against."""
    warn_days, fail_days = warn_within / DAY_SECONDS, fail_within / DAY_SECONDS
    status = expiry_status(days_left, warn_days, fail_days)
    return status, fail_days if status == "fail" else warn_days


def certificate_label(cert: x509.Certificate) -> str:
    """A certificate as a detail names it: ``CN=…`` of its subject, else the whole subject."""
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value!s}" if names else (cert.subject.rfc4514_string() or "(no subject)")


def certificate_metrics(cert: x509.Certificate, source: str, now: datetime) -> dict[str, Any]:
    """The expiry-check metrics of a certificate item (SPEC §5); times ISO 8601 UTC, serial in hex."""
    return {
        "expires_at": format_instant(cert.not_valid_after_utc),
        "days_left": days_until(cert.not_valid_after_utc, now),
        "source": source,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "X"),
        "not_before": format_instant(cert.not_valid_before_utc),
    }


def _earlier_findings(
    judged: x509.Certificate,
    others: Sequence[x509.Certificate],
    status: Status,
    now: datetime,
    limits: tuple[float, float],
    zone: tzinfo,
) -> tuple[Status, list[str]]:
    """Each other certificate expiring before ``judged`` as a finding; the status raised to theirs."""
    findings: list[str] = []
    for cert in sorted(others, key=lambda c: c.not_valid_after_utc):
        if cert.not_valid_after_utc >= judged.not_valid_after_utc:
            continue
        left = days_until(cert.not_valid_after_utc, now)
        own, _ = _judged(left, *limits)
        text = f"{certificate_label(cert)} in the chain expires before it: {when(left, _local_day(cert, zone))}"
        if STATUS_RANK[own] > STATUS_RANK[status]:
            text += f", which makes this check {own}"
            status = own
        findings.append(text)
    return status, findings


def _local_day(cert: x509.Certificate, zone: tzinfo) -> date:
    return cert.not_valid_after_utc.astimezone(zone).date()


def certificate_item(
    name: str,
    certs: Sequence[x509.Certificate],
    source: Source,
    now: datetime,
    warn_within: float,
    fail_within: float,
    verify_error: str | None = None,
    zone: tzinfo = UTC,
) -> Item:
    """The item of one certificate entry: check ``expiry`` and the SPEC §5 metrics.

    ``tls``: ``certs`` is the chain as sent; the leaf (first) is the item, and any chain certificate
    expiring before it is a finding that makes the status at least its own. ``file``: every
    certificate of the file; the item is the soonest to expire, and the detail names it when the file
    holds several. ``verify_error`` (why the chain does not verify) is added to the detail, never to
    the status. Limits in seconds; dates in details are read in ``zone``."""
    if not certs:
        raise ValueError(f"{name}: no certificate to judge")
    judged = certs[0] if source == "tls" else min(certs, key=lambda c: c.not_valid_after_utc)
    left = days_until(judged.not_valid_after_utc, now)
    status, limit_days = _judged(left, warn_within, fail_within)
    expiry = when(left, _local_day(judged, zone))
    parts = [expiry]
    if source == "file" and len(certs) > 1:
        position = next(i for i, c in enumerate(certs) if c is judged) + 1
        parts = [f"{certificate_label(judged)} (certificate {position} of {len(certs)} in the file) {expiry}"]
    others = [c for c in certs if c is not judged]
    status, findings = _earlier_findings(judged, others, status, now, (warn_within, fail_within), zone)
    parts += findings
    if verify_error:
        parts.append(f"chain does not verify: {verify_error}")
    check = Check(check="expiry", status=status, detail="; ".join(parts), observed=left, expected=limit_days)
    return Item(name=name, checks=[check], metrics=certificate_metrics(judged, source, now))


def end_of_day(day: date, zone: tzinfo) -> datetime:
    """The instant ``day`` ends in ``zone``: the next local midnight.

    >>> end_of_day(date(2027, 3, 31), ZoneInfo("Asia/Kathmandu")).astimezone(UTC).isoformat()
    '2027-03-31T18:15:00+00:00'
    """
    return datetime.combine(day + DAY, time(0), tzinfo=zone)


def dated_item(item: DatedItem, now: datetime, zone: tzinfo, warn_within: float, fail_within: float) -> Item:
    """The item of a dated entry. It expires at the end of its day in ``zone`` (the config's timezone);
    ``days_left`` counts local calendar days to then (rounded down, DST shifts aside), negative once
    that instant has passed. The detail names the owner, so an alert does too."""
    expires_at = end_of_day(item.expires, zone)
    wall_clock = expires_at.replace(tzinfo=None) - now.astimezone(zone).replace(tzinfo=None)
    left = wall_clock // DAY
    if now >= expires_at:
        left = min(left, -1)  # the end of its day has passed: expired, whatever the wall clock says
    status, limit_days = _judged(left, warn_within, fail_within)
    kind = f" ({item.kind})" if item.kind else ""
    owner = f", owner {item.owner}" if item.owner else ""
    detail = f"{item.name}{kind} {when(left, item.expires)}{owner}"
    metrics = {
        "expires_at": format_instant(expires_at),
        "days_left": left,
        "source": "date",
        "owner": item.owner,
        "kind": item.kind,
    }
    check = Check(check="expiry", status=status, detail=detail, observed=left, expected=limit_days)
    return Item(name=item.name, checks=[check], metrics=metrics)


def dated_items(config: Config, now: datetime) -> list[Item]:
    """Every ``expiry.items`` entry judged at ``now``, with its own limits (no I/O)."""
    return [dated_item(i, now, config.tzinfo, *config.expiry.limits(i)) for i in config.expiry.items]


# -- targets and batches ----------------------------------------------------------------------


def _url_endpoint(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:  # not a port: that item's error when read, not a crash here
        port = None
    return parts.hostname or "", port


def _configured_target(entry: Certificate, expiry: Expiry) -> CertificateTarget:
    warn, fail = expiry.limits(entry)
    if entry.file is not None:
        return CertificateTarget(entry.name, "file", warn, fail, file=entry.file)
    if entry.tls is not None:
        host, _, port = entry.tls.rpartition(":")
        host, port_number = host.strip("[]"), int(port)
    else:
        host, port_number = _url_endpoint(str(entry.url))
    return CertificateTarget(entry.name, "tls", warn, fail, host=host, port=port_number, server_name=entry.server_name)


def certificate_targets(config: Config) -> list[CertificateTarget]:
    """Every certificate to read: the configured ones (their own limits), then each service with an
    ``https://`` URL, named after the service, with ``expiry``'s limits and the service's time-out."""
    targets = [_configured_target(entry, config.expiry) for entry in config.expiry.certificates]
    warn, fail = config.expiry.limits()
    for service in config.services:
        if service.url is None or urlsplit(str(service.url)).scheme != "https":
            continue
        host, port = _url_endpoint(str(service.url))
        targets.append(
            CertificateTarget(service.name, "tls", warn, fail, host=host, port=port, timeout=service.timeout)
        )
    return targets


def certificate_batches(targets: Sequence[CertificateTarget]) -> list[list[CertificateTarget]]:
    """``targets`` split into at most :data:`CERTIFICATE_TASK_RUNS` batches, in order."""
    size = max(1, -(-len(targets) // CERTIFICATE_TASK_RUNS))
    return [list(targets[i : i + size]) for i in range(0, len(targets), size)]


def batch_label(batch: Sequence[CertificateTarget]) -> str:
    """A batch's task run name: the target, or the first and last with the count."""
    return batch[0].name if len(batch) == 1 else f"{batch[0].name}…{batch[-1].name} ({len(batch)})"


# -- checking ---------------------------------------------------------------------------------


def check_certificate(
    target: CertificateTarget, now: datetime, zone: tzinfo = UTC, verify_context: ssl.SSLContext | None = None
) -> Item:
    """Read ``target``'s certificate(s) and judge them; raises what reading raises."""
    if target.source == "file":
        certs = read_certificate_file(str(target.file))
        return certificate_item(target.name, certs, "file", now, target.warn_within, target.fail_within, zone=zone)
    if not target.host or target.port is None:
        raise PermanentFailure(f"{target.where}: not a host and port to connect to")
    read = read_endpoint_chain(target.host, target.port, target.server_name, target.timeout, verify_context)
    return certificate_item(
        target.name, read.chain, "tls", now, target.warn_within, target.fail_within, read.verify_error, zone
    )


def unreadable_item(target: CertificateTarget, why: str) -> Item:
    """The ``error`` item of a certificate that could not be read (unreachable, not a certificate)."""
    check = Check(check="expiry", status="error", detail=f"certificate not read: {redact(why)}")
    return Item(name=target.name, checks=[check], metrics={"source": target.source})


def _attempt(
    target: CertificateTarget, now: datetime, zone: tzinfo, verify_context: ssl.SSLContext | None
) -> Item | TransientFailure:
    """``target``'s item; a failure that may pass is returned for the caller to retry or report."""
    try:
        return check_certificate(target, now, zone, verify_context)
    except TransientFailure as exc:
        return exc
    except OpsflowError as exc:
        return unreadable_item(target, str(exc))
    except Exception as exc:  # one odd certificate must not cost the batch its other items
        return unreadable_item(target, f"{type(exc).__name__}: {exc}")


def check_certificates(
    batch: Sequence[CertificateTarget],
    now: datetime,
    zone: tzinfo = UTC,
    *,
    retry_unreachable: bool = False,
    verify_context: ssl.SSLContext | None = None,
) -> list[Item]:
    """One item per target, in order, read :data:`MAX_PARALLEL` at a time. A target that cannot be
    read is its item's ``error`` and the others are still judged — except that with
    ``retry_unreachable`` a failure that may pass (refused, time-out, DNS) raises
    :class:`TransientFailure` naming every such target, so the task run is retried."""
    if not batch:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(batch))) as pool:
        outcomes = list(pool.map(lambda t: _attempt(t, now, zone, verify_context), batch))
    transient = [(t, o) for t, o in zip(batch, outcomes, strict=True) if isinstance(o, TransientFailure)]
    if retry_unreachable and transient:
        raise TransientFailure("; ".join(f"{t.name}: {o}" for t, o in transient))
    return [o if isinstance(o, Item) else unreadable_item(t, str(o)) for t, o in zip(batch, outcomes, strict=True)]


def batch_problems(items: Sequence[Item]) -> list[str]:
    """``item: check: detail`` of every failing check of a batch (its task run's message)."""
    return [f"{item.name}: {problem}" for item in items for problem in failing_checks(item)]


def _last_attempt() -> bool:
    """Whether this task run will not be retried (also true outside a task run)."""
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    if context is None:
        return True
    return context.task_run.run_count > (context.task.retries or 0)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="certificate[{label}]")
def certificates_task(
    batch: list[CertificateTarget], now: datetime, label: str, zone: str = "UTC"
) -> list[Item] | State[list[Item]]:
    """Read and judge a batch (:func:`certificate_batches`, :func:`batch_label`). An unreachable endpoint
    retries the batch under the one policy; on the last attempt it is its item's ``error`` beside the
    others' results. Ends Failed (a finding, not retried) naming every ``fail``/``error`` item."""
    items = check_certificates(batch, now, ZoneInfo(zone), retry_unreachable=not _last_attempt())
    return finding_state(items, batch_problems(items))
