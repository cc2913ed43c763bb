"""Email alerts over STARTTLS with SMTP AUTH, against a real aiosmtpd server on loopback.

The server offers STARTTLS with a certificate from a test CA, requires it before
MAIL and AUTH, and accepts one user (PLAIN only, so a wrong password is one
attempt). The client trusts the test CA the way production trusts a private CA:
``SSL_CERT_FILE``, honoured by ``ssl.create_default_context()``.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opsflow.config import Notifications, parse_config
from opsflow.results import Check
from tasks.alert_rules import Alert
from tasks.notify import send_email
from tasks.retry import PermanentFailure
from tests.conftest import free_port

USERNAME = "opsflow-alerts"
PASSWORD = "smtp-tls-password-secret-42"
WRONG_PASSWORD = "not-the-smtp-password-42"
T0 = dt.datetime(2026, 11, 22, 6, tzinfo=dt.UTC)


# -- a test CA and a server certificate it signed -------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA the client is told to trust
    other_ca: Path  # a CA that did not sign the server's certificate
    server_cert: Path
    server_key: Path


def _ca(name: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = tmp_path_factory.mktemp("smtp-pki")
    ca_cert, ca_key = _ca("opsflow test CA")
    other_cert, _ = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.other_ca.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


# -- the server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    tls: bool
    cipher: Any
    authenticated: bool | None
    user: Any
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class TlsSmtpServer:
    """What the server saw: one ``greetings`` entry per EHLO (``True`` once inside TLS),
    every AUTH attempt as ``(mechanism, user, accepted, over_tls)``, every message accepted."""

    port: int
    greetings: list[bool] = field(default_factory=list)
    logins: list[tuple[str, str, bool, bool]] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)

    @property
    def connections(self) -> int:
        """Connections that greeted (each starts with a plain-text EHLO)."""
        return self.greetings.count(False)

    # aiosmtpd hooks -----------------------------------------------------------------

    async def handle_EHLO(self, _server: Any, session: Any, _envelope: Any, hostname: str, responses: list[str]) -> Any:
        session.host_name = hostname  # a handle_EHLO hook must do what aiosmtpd's default does
        self.greetings.append(session.ssl is not None)
        return responses

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(
                tls=session.ssl is not None,
                cipher=(session.ssl or {}).get("cipher"),
                authenticated=session.authenticated,
                user=session.auth_data,
                sender=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                data=envelope.content,
            )
        )
        return "250 OK"

    def authenticate(self, _server: Any, session: Any, _envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        assert isinstance(auth_data, LoginPassword)
        user = auth_data.login.decode()
        accepted = user == USERNAME and auth_data.password.decode() == PASSWORD
        self.logins.append((mechanism, user, accepted, session.ssl is not None))
        # handled=False: aiosmtpd answers 235 or "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=accepted, handled=False, auth_data=user if accepted else None)


@pytest.fixture
def tls_smtp(pki: Pki) -> Iterator[TlsSmtpServer]:
    """An SMTP server on loopback that offers STARTTLS and requires it before MAIL and AUTH."""
    from aiosmtpd.controller import Controller

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = TlsSmtpServer(port=free_port())
    controller = Controller(
        server,
        hostname="127.0.0.1",
        port=server.port,
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        authenticator=server.authenticate,
        auth_exclude_mechanism=["LOGIN"],  # PLAIN only: one attempt per login
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


# -- the client side --------------------------------------------------------------------------


def email_settings(
    port: int, *, starttls: bool, username: str | None = USERNAME, password: str = PASSWORD
) -> Notifications:
    """``notifications`` as opsflow.yaml states it: the password comes from ``${SMTP_PASSWORD}``."""
    credentials = f"username: {username}, password: '${{SMTP_PASSWORD}}', " if username else ""
    config = parse_config(
        "notifications:\n"
        f"  email: {{smtp_host: localhost, smtp_port: {port}, starttls: {str(starttls).lower()}, "
        f"{credentials}sender: opsflow@example.com, to: [oncall@example.com]}}\n",
        environ={"SMTP_PASSWORD": password},
    )
    return config.notifications


def an_alert() -> Alert:
    return Alert(
        kind="trigger",
        routine="backup-verification",
        item="orders-db",
        status="fail",
        previous_status="ok",
        checks=(Check(check="fresh", status="fail", detail="newest backup is 3 days old"),),
        as_of=T0,
        flow_run_id=None,
        channels=("email",),
    )


def plain_auth_blob(user: str, password: str) -> str:
    """What ``AUTH PLAIN`` puts on the wire: the password, base64-encoded."""
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def assert_not_leaked(secret: str, caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    everything = [record.getMessage() for record in caplog.records] + [str(t) for t in texts]
    assert not [text for text in everything if secret in text]
    # The client must not log the AUTH exchange either (the test server's own "mail.log" is not opsflow's).
    blob = plain_auth_blob(USERNAME, secret)
    assert not [r.getMessage() for r in caplog.records if r.name != "mail.log" and blob in r.getMessage()]


# -- tests ------------------------------------------------------------------------------------


def test_starttls_and_login_deliver_over_tls_without_leaking_the_password(
    tls_smtp: TlsSmtpServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))  # trust the test CA, as a private CA would be trusted
    caplog.set_level(logging.DEBUG)

    send_email(email_settings(tls_smtp.port, starttls=True), an_alert(), "http://prefect.example/runs/1")

    assert tls_smtp.greetings == [False, True]  # EHLO, STARTTLS, EHLO again inside TLS
    assert tls_smtp.logins == [("PLAIN", USERNAME, True, True)]
    [received] = tls_smtp.messages
    assert received.tls and received.cipher is not None
    assert received.authenticated is True and received.user == USERNAME
    assert received.sender == "opsflow@example.com" and received.recipients == ["oncall@example.com"]
    mail = email.message_from_bytes(received.data)
    assert mail["Subject"] == "[opsflow] FAILING: backup-verification / orders-db is fail"
    assert "newest backup is 3 days old" in mail.get_payload()
    assert_not_leaked(PASSWORD, caplog)


@pytest.mark.parametrize("username", [None, USERNAME], ids=["no-auth", "with-auth"])
def test_plain_text_to_a_server_requiring_starttls_fails_permanently(
    tls_smtp: TlsSmtpServer, username: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentFailure) as failure:
        send_email(email_settings(tls_smtp.port, starttls=False, username=username), an_alert(), None)

    message = str(failure.value)
    assert "\n" not in message
    if username is None:
        # MAIL FROM before STARTTLS: aiosmtpd answers 530.
        assert message == "email: SMTP 530: Must issue a STARTTLS command first"
    else:
        # AUTH is not offered outside TLS: smtplib refuses to send the password in clear.
        assert message == "email: SMTPNotSupportedError: SMTP AUTH extension not supported by server."
    assert tls_smtp.logins == [] and tls_smtp.messages == []
    assert tls_smtp.greetings == [False]
    assert_not_leaked(PASSWORD, caplog, message)


def test_permanent_failure_is_not_retried_by_the_delivery_task(prefect_api: None, tls_smtp: TlsSmtpServer) -> None:
    from prefect import flow

    from tasks.notify import deliver

    notifications = email_settings(tls_smtp.port, starttls=False, username=None)

    @flow(name="email-tls-test")
    def one_delivery() -> tuple[bool, str]:
        state = deliver("email", an_alert(), notifications, None, return_state=True)
        return state.is_failed(), str(state.result(raise_on_failure=False))

    failed, error = one_delivery()
    assert failed and error == "email: SMTP 530: Must issue a STARTTLS command first"
    assert tls_smtp.connections == 1  # a retry would have connected again (the policy retries 3 times)


def test_an_untrusted_certificate_fails_before_anything_is_sent(
    tls_smtp: TlsSmtpServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca))  # trusts a CA, just not the one that signed the server's
    caplog.set_level(logging.DEBUG)

    # Permanent: a certificate the client does not trust will not be trusted on a retry.
    with pytest.raises(PermanentFailure) as failure:
        send_email(email_settings(tls_smtp.port, starttls=True), an_alert(), None)

    message = str(failure.value)
    assert message.startswith("email: SSLCertVerificationError: ")
    assert "certificate verify failed" in message and "\n" not in message
    assert tls_smtp.greetings == [False]  # never got to EHLO inside TLS
    assert tls_smtp.logins == []  # the password never went to a server we could not verify
    assert tls_smtp.messages == []
    assert_not_leaked(PASSWORD, caplog, message)


def test_a_wrong_password_is_a_permanent_failure_that_does_not_show_the_password(
    tls_smtp: TlsSmtpServer, pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PermanentFailure) as failure:
        send_email(email_settings(tls_smtp.port, starttls=True, password=WRONG_PASSWORD), an_alert(), None)

    message = str(failure.value)
    assert message == "email: SMTP login failed: 535 5.7.8 Authentication credentials invalid"
    assert failure.value.__cause__ is None and failure.value.__suppress_context__  # no smtplib traceback attached
    assert tls_smtp.logins == [("PLAIN", USERNAME, False, True)]
    assert tls_smtp.messages == []
    assert_not_leaked(WRONG_PASSWORD, caplog, message, repr(failure.value))
