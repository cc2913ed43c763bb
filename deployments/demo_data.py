"""The data ``opsflow demo`` runs on: a sample "production" database with real rows, real ``pg_dump``
backups of it (healthy ones in S3, stale ones on disk), two months of probe history, two months of
capacity history, and the ``opsflow.yaml`` that points the routines at all of it.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from opsflow.embedded import client_bin, ensure_database, url_with_database
from opsflow.history_csv import CapacityRow, ProbeRow

SHOP = "shop"
CRM = "crm"
BUCKET = "prod-backups"
SHOP_PREFIX = "postgres/shop/"
CRM_PREFIX = "crm/"
NIGHTS = 3  # backups per set

SHOP_SCHEMA = """
create table customers (
    customer_id int primary key, name text not null, email text not null, country text not null,
    created_at timestamptz not null);
create table products (
    product_id int primary key, sku text not null unique, name text not null, price numeric(10, 2) not null);
create table orders (
    order_id int primary key, customer_id int not null references customers, status text not null,
    created_at timestamptz not null);
create table order_lines (
    order_id int not null references orders, line_no int not null, product_id int not null references products,
    quantity int not null, price numeric(10, 2) not null, primary key (order_id, line_no));
insert into customers
    select g, 'customer ' || g, 'customer' || g || '@example.com',
           (array['DE', 'FR', 'NL', 'US', 'GB', 'SE'])[1 + g % 6], now() - (g % 700) * interval '1 day'
    from generate_series(1, 2000) g;
insert into products
    select g, 'SKU-' || lpad(g::text, 5, '0'), 'product ' || g, round((5 + (g * 37) % 400)::numeric + 0.99, 2)
    from generate_series(1, 250) g;
"""

# Orders (with one to four lines each) ``first``..``last``, spread over the 90 days before now.
ORDERS_SQL = """
insert into orders
    select g, 1 + (g * 7919) % 2000, (array['paid', 'shipped', 'delivered', 'returned'])[1 + g % 4],
           now() - ((30000 - g) % 90) * interval '1 day' - (g % 1440) * interval '1 minute'
    from generate_series({first}, {last}) g;
insert into order_lines
    select o, l, 1 + (o * 31 + l * 17) % 250, 1 + (o + l) % 3, round((5 + ((o + l) * 37) % 400)::numeric + 0.99, 2)
    from generate_series({first}, {last}) o, generate_series(1, 4) l
    where l <= 1 + o % 4;
"""

CRM_SQL = """
create table contacts (contact_id int primary key, name text not null, email text not null, owner text not null);
create table notes (note_id int primary key, contact_id int not null references contacts, body text not null);
insert into contacts select g, 'contact ' || g, 'contact' || g || '@example.org', 'rep' || g % 12
    from generate_series(1, 1500) g;
insert into notes select g, 1 + g % 1500, md5(g::text) || ' ' || md5((g * 3)::text) from generate_series(1, 6000) g;
"""

WAREHOUSE = "warehouse"

# A warehouse with one clean table and one with planted defects, for the data-quality routine: 37 null
# user ids, 6 event ids each loaded twice (12 duplicated rows), 5 amounts beyond 10,000 (and 3 exactly at
# it, which pass: bounds are inclusive), and nothing loaded for the last 3 hours.
WAREHOUSE_SQL = """
create schema analytics;
create table analytics.events (
    event_id bigint not null, user_id int, amount numeric(12, 2) not null, created_at timestamptz not null);
insert into analytics.events
    select g, case when g % 1351 = 0 then null else 1 + g % 4000 end,
           case when g % 9973 = 0 then 10000 + g % 500 else (g * 13) % 5000 end,
           now() - interval '3 hours' - (50000 - g) * interval '1 minute'
    from generate_series(1, 50000) g;
update analytics.events set amount = 10000 where event_id in (101, 202, 303);
insert into analytics.events select event_id, user_id, amount, created_at from analytics.events
    where event_id in (7, 70, 700, 7000, 17000, 27000);
create table analytics.daily_revenue (day date primary key, orders int not null, revenue numeric(14, 2) not null);
insert into analytics.daily_revenue
    select d::date, 180 + (extract(doy from d)::int * 7) % 40, 12000 + (extract(doy from d)::int * 131) % 3000
    from generate_series(current_date - 89, current_date, interval '1 day') d;
"""


def write_certificates(demo_dir: Path) -> None:
    """The certificates the demo's ``expiry-check`` reads as files: a VPN gateway's that expires in 20
    days (a warning), and an internal CA's good for years."""
    write_certificate(demo_dir / "certs" / "vpn.pem", "vpn.shop.example", 20)
    write_certificate(demo_dir / "certs" / "ca.pem", "Shop Internal CA", 900)


def write_certificate(path: Path, common_name: str, valid_days: int) -> Path:
    """A self-signed PEM certificate for ``common_name`` that expires ``valid_days`` from now (the demo's
    ``expiry-check`` reads it as a file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=365))
        .not_valid_after(now + timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def create_warehouse(server_url: str) -> str:
    """The sample warehouse ``warehouse`` (``analytics.events`` with planted defects, a clean
    ``analytics.daily_revenue``); its URL."""
    _recreate(server_url, WAREHOUSE)
    url = url_with_database(server_url, WAREHOUSE)
    with psycopg.connect(url) as conn:
        conn.execute(WAREHOUSE_SQL)
    return url


#: The DR drill's checks of the restored ``shop``.
DRILL_SQL = [
    {
        "name": "no orphan lines",
        "query": "select count(*) from order_lines l left join orders o using (order_id) where o.order_id is null",
        "expect": 0,
    },
    {
        "name": "every order has lines",
        "query": "select count(*) from orders o where not exists "
        "(select 1 from order_lines l where l.order_id = o.order_id)",
        "expect": 0,
    },
]


@dataclass(frozen=True)
class Dump:
    """One backup file: its name in the backup set, where it is, when it was taken."""

    name: str
    path: Path
    taken_at: datetime

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def create_shop(server_url: str, orders: int = 20_000) -> str:
    """The sample production database ``shop`` (customers, products, orders, order lines); its URL."""
    _recreate(server_url, SHOP)
    url = url_with_database(server_url, SHOP)
    with psycopg.connect(url) as conn:
        conn.execute(SHOP_SCHEMA)
        conn.execute(_orders(1, orders))
    return url


def grow_shop(url: str, first: int, count: int) -> None:
    """A day of business: ``count`` more orders from ``first`` on."""
    with psycopg.connect(url) as conn:
        conn.execute(_orders(first, first + count - 1))


def _orders(first: int, last: int) -> sql.Composed:
    return sql.SQL(ORDERS_SQL).format(first=sql.Literal(first), last=sql.Literal(last))


def row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")]
        counts = {}
        for table in sorted(tables):
            row = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))).fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts


def create_crm(server_url: str) -> str:
    """A second, small database whose backups have stopped (the stale set)."""
    _recreate(server_url, CRM)
    url = url_with_database(server_url, CRM)
    with psycopg.connect(url) as conn:
        conn.execute(CRM_SQL)
    return url


def _recreate(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    ensure_database(server_url, name)


def pg_dump(url: str, target: Path) -> Path:
    """A custom-format ``pg_dump`` of ``url`` into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(client_bin("pg_dump")), "-Fc", "--no-owner", "-f", str(target), url],
        check=True,
        capture_output=True,
    )
    return target


def shop_backups(url: str, directory: Path, now: datetime, growth: int = 400) -> list[Dump]:
    """``NIGHTS`` nightly backups of ``shop``, the database growing in between; oldest first."""
    dumps = []
    first = 1 + row_counts(url)["orders"]
    for night in range(NIGHTS - 1, -1, -1):
        taken = (now - timedelta(days=night)).replace(microsecond=0)
        name = f"shop-{taken:%Y-%m-%dT%H%MZ}.dump"
        dumps.append(Dump(name, pg_dump(url, directory / name), taken))
        if night:
            grow_shop(url, first, growth)
            first += growth
    return dumps


def stale_backups(url: str, directory: Path, now: datetime, newest_age: timedelta = timedelta(days=3)) -> list[Dump]:
    """Backups of ``url`` on disk, the newest ``newest_age`` old (its mtime), each with a ``.sha256`` sidecar:
    a set whose backup job stopped."""
    directory.mkdir(parents=True, exist_ok=True)
    source = pg_dump(url, directory.parent / f".{directory.name}.dump")
    data = source.read_bytes()
    source.unlink()
    dumps = []
    for night in range(NIGHTS - 1, -1, -1):
        taken = (now - newest_age - timedelta(days=night)).replace(hour=1, minute=30, second=0, microsecond=0)
        name = f"crm-{taken:%Y-%m-%d}.dump"
        path = directory / name
        path.write_bytes(data)
        (directory / f"{name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        for written in (path, directory / f"{name}.sha256"):
            os.utime(written, (taken.timestamp(), taken.timestamp()))
        dumps.append(Dump(name, path, taken))
    return dumps


def upload_backups(endpoint_url: str, credentials: dict[str, str], dumps: Sequence[Dump]) -> None:
    """Into ``BUCKET``/``SHOP_PREFIX`` on the S3 endpoint, oldest first, each with S3's SHA-256 checksum and
    server-side encryption (S3 LastModified is the upload time: they are all fresh)."""
    import boto3
    from botocore.config import Config as BotoConfig

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=credentials["AWS_DEFAULT_REGION"],
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
    )
    try:
        client.create_bucket(Bucket=BUCKET)
        for dump in dumps:
            with dump.path.open("rb") as body:
                client.put_object(
                    Bucket=BUCKET,
                    Key=SHOP_PREFIX + dump.name,
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    ServerSideEncryption="AES256",
                )
    finally:
        client.close()


# -- probe history ------------------------------------------------------------------------------------


def probe_history(services: Sequence[str], end: datetime, days: int, seed: int = 7) -> Iterator[ProbeRow]:
    """A minute-by-minute probe history of ``services`` for ``days`` before ``end``: the first one down
    for two to six minutes every few days (within an SLO of 99.5% on any day), the others always up;
    latencies around 40 ms with an afternoon peak. Deterministic for a given ``end``."""
    rng = random.Random(seed)
    end = end.replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    outages: dict[str, list[tuple[datetime, datetime]]] = {name: [] for name in services}
    day = start.replace(hour=0, minute=0)
    while day < end:
        if services and rng.random() < 0.25:
            begin = day + timedelta(minutes=rng.randrange(0, 1440))
            outages[services[0]].append((begin, begin + timedelta(minutes=rng.randrange(2, 7))))
        day += timedelta(days=1)
    for name in services:
        down = outages[name]
        at = start
        while at < end:
            failing = any(begin <= at < until for begin, until in down)
            evening = 1 + 0.6 * max(0.0, math.sin((at.hour - 12) / 24 * 2 * math.pi))
            if failing:
                yield ProbeRow(name, at, False, round(rng.uniform(2, 30), 1), 500, "status 500, expected 200")
            else:
                latency = round(rng.lognormvariate(math.log(38 * evening), 0.35), 1)
                yield ProbeRow(name, at, True, latency, 200, None)
            at += timedelta(minutes=1)


#: The demo's capacity metrics with a seeded history: the shop database (collected hourly from now on)
#: and a ticket backlog fed by import, cleaned up every week.
SHOP_SIZE_METRIC = "shop-db-size"
BACKLOG_METRIC = "support-backlog"


def database_size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def capacity_history(shop_size: int, end: datetime, days: int = 60, seed: int = 11) -> Iterator[CapacityRow]:
    """Hourly history ending at ``end``: the shop database growing to ``shop_size`` bytes with a
    one-time cleanup (a ``VACUUM FULL``) 20 days ago, and a support backlog that grows through each week
    and is worked down every Monday. Deterministic for a given ``end``."""
    rng = random.Random(seed)
    end = end.replace(minute=0, second=0, microsecond=0)
    hours = days * 24
    cleanup = hours - 20 * 24
    for hour in range(hours):
        at = end - timedelta(hours=hours - hour)
        ago = (hours - hour) / 24
        size = shop_size * (1 - 0.008 * ago) * (1.15 if hour < cleanup else 1.0)
        yield CapacityRow(SHOP_SIZE_METRIC, at, round(size * (1 + rng.uniform(-0.003, 0.003))))
        weekday_hours = at.weekday() * 24 + at.hour
        backlog = 900 + 8 * (days - ago) + 4 * weekday_hours + 40 * math.sin(at.hour / 24 * 2 * math.pi)
        yield CapacityRow(BACKLOG_METRIC, at, round(backlog + rng.uniform(-25, 25)))


# -- the config ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoEndpoints:
    """Where everything the demo started answers."""

    demo_dir: Path
    store_url: str
    shop_url: str
    s3_url: str
    http_url: str
    smtp_port: int
    shop_size: int = 100_000_000  # bytes: the shop database's size when the demo made it
    warehouse_url: str = ""


def demo_config(where: DemoEndpoints) -> dict[str, Any]:
    """The demo's ``opsflow.yaml`` (no secrets: S3 keys come from the environment)."""
    return {
        "timezone": "UTC",
        "store": {"url": where.store_url},
        "storages": {
            "s3main": {"type": "s3", "bucket": BUCKET, "endpoint_url": where.s3_url, "region": "us-east-1"},
            "archive": {"type": "filesystem", "path": str(where.demo_dir / "backups")},
        },
        "backups": [
            {
                "name": "shop-db",
                "storage": "s3main",
                "prefix": SHOP_PREFIX,
                "format": "pg_dump",
                "max_age": "26h",
                "min_size": "100KB",
                "size_drop": "50%",
                # S3 LastModified is the upload time: every backup here was written just now.
                "retention": {"days": 30, "min_count": 1},
                "checksum": "s3",
                "require_encryption": True,
            },
            {
                "name": "crm-db",
                "storage": "archive",
                "prefix": CRM_PREFIX,
                "format": "pg_dump",
                "max_age": "26h",
                "retention": {"days": 30, "min_count": 3, "max_gap": "26h"},
                "checksum": "sidecar",
            },
        ],
        "databases": [
            {
                "name": SHOP,
                "backup": "shop-db",
                "source_url": where.shop_url,
                "drill": {
                    "target": "embedded",
                    "rto_target": "10m",
                    "rpo_target": "26h",
                    "jobs": 2,
                    "tables": {"orders": {"min_rows": 1000}, "order_lines": {"min_rows": 10000}, "customers": {}},
                    "sql": DRILL_SQL,
                },
            }
        ],
        "services": [
            {
                "name": "shop-api",
                "url": f"{where.http_url}/health",
                "interval": "60s",
                "timeout": "5s",
                "expect": {"status": [200], "body_contains": '"ok"', "max_latency": "2s"},
                "failure_threshold": 2,
                "slo": {"availability": "99.5%", "latency_p95": "300ms"},
            },
            {
                "name": "shop-web",
                "url": f"{where.http_url}/",
                "interval": "60s",
                "timeout": "5s",
                "expect": {"status": [200], "body_contains": "shop"},
                "slo": {"availability": "99.9%"},
            },
        ],
        "notifications": {
            "webhook": {"url": f"{where.http_url}/webhook"},
            "email": {
                "smtp_host": "127.0.0.1",
                "smtp_port": where.smtp_port,
                "starttls": False,
                "sender": "opsflow-demo@example.com",
                "to": ["oncall@example.com"],
            },
        },
        "capacity": [
            {
                "metric": SHOP_SIZE_METRIC,
                "source": {"type": "postgres", "url": where.shop_url, "measure": "database_size"},
                "threshold": f"{where.shop_size * 1.4 / 1e6:.0f}MB",  # about 45 days of its growth away
            },
            {
                "metric": "shop-connections",
                "source": {"type": "postgres", "url": where.shop_url, "measure": "connections"},
                "threshold": "80%",
            },
            {"metric": "backups-bucket", "source": {"type": "s3", "storage": "s3main"}, "threshold": "1GB"},
            {"metric": "demo-disk", "source": {"type": "filesystem", "path": str(where.demo_dir)}, "threshold": "95%"},
            {"metric": BACKLOG_METRIC, "source": {"type": "import"}, "threshold": 2500, "warn_within": "60d"},
        ],
        "quality": [
            {
                "name": "events",
                "url": where.warehouse_url,
                "table": "analytics.events",
                "expectations": [
                    {"expect_column_values_to_not_be_null": {"column": "user_id"}},
                    {"expect_column_values_to_be_unique": {"column": "event_id"}},
                    {"expect_column_values_to_be_between": {"column": "amount", "min_value": 0, "max_value": 10000}},
                    {"expect_table_row_count_to_be_between": {"min_value": 10000}},
                ],
                "freshness": {"column": "created_at", "max_age": "1h"},
                "row_count_change": {"max_change": "50%", "runs": 7},
                "schema": {"allow_new_columns": True},
            },
            {
                "name": "daily-revenue",
                "url": where.warehouse_url,
                "table": "analytics.daily_revenue",
                "expectations": [
                    {"expect_column_values_to_be_unique": {"column": "day"}},
                    {"expect_column_values_to_be_between": {"column": "orders", "min_value": 1}},
                ],
                "freshness": {"column": "day", "max_age": "2d"},
                "schema": {"allow_new_columns": False},
            },
        ],
        "expiry": {
            "warn_within": "30d",
            "fail_within": "7d",
            "certificates": [
                {"name": "vpn-gateway", "file": str(where.demo_dir / "certs" / "vpn.pem")},
                {"name": "internal-ca", "file": str(where.demo_dir / "certs" / "ca.pem")},
            ],
            "items": [
                {
                    "name": "pagerduty-contract",
                    "expires": (date.today() + timedelta(days=5)).isoformat(),
                    "owner": "ops-leads@example.com",
                    "kind": "contract",
                },
                {
                    "name": "shop-example-domain",
                    "expires": (date.today() + timedelta(days=200)).isoformat(),
                    "owner": "it@example.com",
                    "kind": "domain",
                },
                {
                    "name": "db-backup-license",
                    "expires": (date.today() + timedelta(days=25)).isoformat(),
                    "owner": "dba@example.com",
                    "kind": "license",
                },
            ],
        },
        "digests": {"daily": {"to": ["oncall@example.com"]}, "weekly": {"to": ["ops-leads@example.com"]}},
        "reports": {"monthly": {"to": ["stakeholders@example.com"], "out_dir": str(where.demo_dir / "reports")}},
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    header = (
        "# Written by `opsflow demo`: every endpoint here is a loopback server the demo started, and\n"
        "# is gone when it stops. S3 keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, width=120), encoding="utf-8")
    return path
