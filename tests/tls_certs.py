"""Generated certificates and a loopback TLS server, for tests that read certificates.

A :class:`TestPki` is a test CA, an intermediate it signed, and leaf certificates
signed by the intermediate with chosen lifetimes; :class:`TlsServer` serves
certificate chains on 127.0.0.1 from a thread, picking one by the SNI name the
client sends. Every ``not_after`` is given as an instant, so a test can count
days exactly::

    pki = TestPki.create(not_after=NOW + timedelta(days=400))
    leaf = pki.leaf("localhost", not_after=NOW + timedelta(days=20, hours=12))
    with TlsServer({"localhost": pki.chain_files(tmp_path, leaf)}) as server:
        read_endpoint_chain("127.0.0.1", server.port, "localhost")
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate and its key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    common_name: str,
    not_after: dt.datetime,
    issuer: Issued | None = None,
    ca: bool = False,
    dns_names: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
) -> Issued:
    """A certificate for ``common_name`` valid until ``not_after`` (whole seconds, as X.509 keeps them),
    signed by ``issuer`` (self-signed when None); a CA when ``ca``, else a TLS server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer is not None else key
    issuer_name = issuer.cert.subject if issuer is not None else _name(common_name)
    start = not_before or min(not_after, dt.datetime.now(dt.UTC)) - dt.timedelta(days=30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
    else:
        names = dns_names or (common_name,)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass(frozen=True)
class ChainFiles:
    """A server's certificate chain (leaf first) and key, as PEM files."""

    chain: Path
    key: Path


@dataclass(frozen=True)
class TestPki:
    """A test CA and an intermediate it signed; leaves are signed by the intermediate."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    root: Issued
    intermediate: Issued

    @classmethod
    def create(cls, not_after: dt.datetime, intermediate_not_after: dt.datetime | None = None) -> TestPki:
        root = issue("opsflow test root CA", not_after, ca=True)
        intermediate = issue("opsflow test intermediate", intermediate_not_after or not_after, root, ca=True)
        return cls(root, intermediate)

    def leaf(self, common_name: str, not_after: dt.datetime) -> Issued:
        return issue(common_name, not_after, self.intermediate)

    def chain_files(self, directory: Path, leaf: Issued, name: str | None = None) -> ChainFiles:
        """``leaf`` and the intermediate in one PEM file (as a server sends them), and the leaf's key."""
        stem = name or leaf.cert.serial_number.to_bytes(20, "big").hex()[:12]
        files = ChainFiles(directory / f"{stem}-chain.pem", directory / f"{stem}-key.pem")
        files.chain.write_bytes(leaf.pem + self.intermediate.pem)
        files.key.write_bytes(leaf.key_pem)
        return files

    def trust(self) -> ssl.SSLContext:
        """A verifying client context that trusts this test root only."""
        context = ssl.create_default_context(cadata=self.root.pem.decode())
        return context


def self_signed_files(directory: Path, common_name: str, not_after: dt.datetime) -> ChainFiles:
    issued = issue(common_name, not_after)
    files = ChainFiles(directory / f"{common_name}-self-chain.pem", directory / f"{common_name}-self-key.pem")
    files.chain.write_bytes(issued.pem)
    files.key.write_bytes(issued.key_pem)
    return files


def server_context(files: ChainFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.chain, files.key)
    return context


class TlsServer:
    """A TLS server on 127.0.0.1 in a thread: it completes handshakes and closes. ``chains`` maps SNI
    names to what it serves; the first one is served to a client that sends no (or an unknown) name."""

    def __init__(self, chains: Mapping[str, ChainFiles]) -> None:
        self.contexts = {name: server_context(files) for name, files in chains.items()}
        self.default = next(iter(self.contexts.values()))
        self.default.sni_callback = self._choose
        self.names_seen: list[str | None] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _choose(self, sslobj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.names_seen.append(name)
        sslobj.context = self.contexts.get(name or "", self.default)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                # a client that rejects the chain aborts the handshake: that is its business
                with (
                    contextlib.suppress(OSError),
                    self.default.wrap_socket(conn, server_side=True) as tls,
                ):
                    tls.recv(1)  # until the client closes

    def __enter__(self) -> TlsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port
