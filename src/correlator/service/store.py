"""The durable investigation store: SQLite (WAL) by default, PostgreSQL for replicas.

One row per alert occurrence, keyed by Alertmanager's fingerprint and the
alert's ``startsAt``: re-sends of the same notification (from a retry, or from
every peer of an Alertmanager cluster, or through several receiver replicas)
land on the same row, so the alert is investigated once. A ``resolved``
notification marks the row resolved.

Work is claimed with *leases*: a worker sets ``status='running'``, its owner id
and ``lease_until``, and renews the lease while it works. A worker that dies
(SIGKILL, crash, lost host) stops renewing; once the lease lapses any replica
claims the row again. Only the current lease owner can store a result
(``finish`` is fenced on the owner), so each alert ends with exactly one
result. On PostgreSQL the claim is ``SELECT ... FOR UPDATE SKIP LOCKED``, so
replicas never wait for, or take, each other's rows.

Row states::

    queued ──claim──► running ──finish──► done | failed
                        │  lease lapses (worker died)
                        └──────────────► claimable again (attempts + 1)

Errors: every backend failure is raised as :class:`StoreError` (the app answers
503, which Alertmanager retries).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from correlator.errors import CorrelatorError
from correlator.model import Alert, format_time

__all__ = [
    "QUARANTINED",
    "STATUSES",
    "Accepted",
    "Job",
    "PostgresStore",
    "Query",
    "Record",
    "SQLiteStore",
    "Store",
    "StoreError",
    "investigation_id",
    "open_store",
]

#: Row states, in the order a row goes through them.
STATUSES = ("queued", "running", "done", "failed")


class StoreError(CorrelatorError):
    """The investigation store could not be read or written."""


def investigation_id(fingerprint: str, starts_at: float) -> str:
    """The stable id of the investigation of one alert occurrence.

    Derived from the key, so every replica names the same alert the same way.
    """
    key = f"{fingerprint}|{format_time(starts_at)}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


def alert_to_json(alert: Alert) -> dict[str, Any]:
    """The alert as stored (the report contract's form, plus its source)."""
    data = alert.to_json()
    data["source"] = alert.source
    return data


@dataclass(frozen=True)
class Accepted:
    """What storing one received alert came to.

    ``outcome`` is ``new`` (queued for investigation), ``duplicate`` (already
    known: a re-send) or ``resolved`` (an existing investigation marked resolved).
    """

    id: str
    fingerprint: str
    outcome: str


@dataclass(frozen=True)
class Job:
    """A claimed investigation: the alert to investigate, and how often it was tried.

    ``problem`` is set (and ``alert`` empty) when the stored alert is not
    readable JSON: the worker quarantines such a row instead of running it.
    """

    id: str
    alert: dict[str, Any]
    attempts: int
    problem: str | None = None


#: The prefix of the error of a row whose stored alert cannot be investigated.
QUARANTINED = "quarantined: "


def _load_json(text: Any, what: str) -> tuple[Any, str | None]:
    """``text`` parsed as JSON, or ``None`` and what is wrong with it."""
    try:
        return json.loads(text), None
    except (TypeError, ValueError) as err:
        return None, f"the stored {what} is not readable JSON ({type(err).__name__}: {err})"


@dataclass(frozen=True)
class Record:
    """One stored investigation, as the results API shows it."""

    id: str
    fingerprint: str
    alertname: str
    service: str | None
    status: str
    resolved: bool
    starts_at: float
    received_at: float
    attempts: int
    alert: dict[str, Any]
    started_at: float | None = None
    finished_at: float | None = None
    resolved_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    def to_json(self, with_result: bool = True) -> dict[str, Any]:
        """JSON-ready form; times as RFC 3339."""

        def t(v: float | None) -> str | None:
            return format_time(v) if v is not None else None

        out: dict[str, Any] = {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "service": self.service,
            "status": self.status,
            "resolved": self.resolved,
            "startsAt": t(self.starts_at),
            "receivedAt": t(self.received_at),
            "startedAt": t(self.started_at),
            "finishedAt": t(self.finished_at),
            "resolvedAt": t(self.resolved_at),
            "attempts": self.attempts,
            "error": self.error,
            "alert": self.alert,
        }
        if with_result:
            out["investigation"] = self.result
        return out


@dataclass(frozen=True)
class Query:
    """Filters for listing investigations (all optional; times are unix seconds on startsAt)."""

    status: str | None = None
    service: str | None = None
    alertname: str | None = None
    fingerprint: str | None = None
    resolved: bool | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0


class Store(Protocol):
    """What the service needs from a store; both backends implement it, thread-safe."""

    def migrate(self) -> None:
        """Create the tables if missing (idempotent, safe from several replicas at once)."""
        ...

    def accept(self, alerts: Sequence[Alert]) -> list[Accepted]:
        """Durably record received alerts (one transaction); return what each came to."""
        ...

    def claim(self, owner: str, lease: float, limit: int = 1) -> list[Job]:
        """Take up to ``limit`` queued (or lease-lapsed) investigations for ``owner``."""
        ...

    def renew(self, inv_id: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease; ``False`` if the lease was lost."""
        ...

    def finish(
        self, inv_id: str, owner: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> bool:
        """Store the outcome if ``owner`` still holds the lease; ``False`` if not."""
        ...

    def get(self, inv_id: str) -> Record | None:
        """One investigation by id."""
        ...

    def query(self, q: Query) -> list[Record]:
        """Investigations matching ``q``, newest alert first."""
        ...

    def counts(self) -> dict[str, int]:
        """Number of investigations by status (and ``quarantined``: failed rows set aside)."""
        ...

    def prune(self, older_than: float) -> int:
        """Delete finished investigations whose alert was received before ``older_than``."""
        ...

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


_COLUMNS = (
    "id, fingerprint, alertname, service, status, resolved, starts_at, received_at, attempts, "
    "alert_json, started_at, finished_at, resolved_at, error, result_json"
)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS investigations (
        id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        starts_at DOUBLE PRECISION NOT NULL,
        alertname TEXT NOT NULL,
        service TEXT,
        alert_json TEXT NOT NULL,
        status TEXT NOT NULL,
        resolved INTEGER NOT NULL DEFAULT 0,
        resolved_at DOUBLE PRECISION,
        received_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        error TEXT,
        result_json TEXT,
        UNIQUE (fingerprint, starts_at)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_investigations_claim ON investigations (status, received_at)",
    "CREATE INDEX IF NOT EXISTS ix_investigations_starts ON investigations (starts_at)",
    "CREATE INDEX IF NOT EXISTS ix_investigations_fp ON investigations (fingerprint)",
]


def _record(row: Sequence[Any]) -> Record:
    alert, problem = _load_json(row[9], "alert")
    result, result_problem = _load_json(row[14], "result") if row[14] else (None, None)
    error = row[13]
    if problem or result_problem:
        # Still listable and readable: the API shows what is wrong instead of a 500.
        error = error or f"{QUARANTINED}{problem or result_problem}"
    return Record(
        id=row[0],
        fingerprint=row[1],
        alertname=row[2],
        service=row[3],
        status=row[4],
        resolved=bool(row[5]),
        starts_at=float(row[6]),
        received_at=float(row[7]),
        attempts=int(row[8]),
        alert=alert if isinstance(alert, dict) else {},
        started_at=row[10],
        finished_at=row[11],
        resolved_at=row[12],
        error=error,
        result=result if isinstance(result, dict) else None,
    )


def _job(row: Sequence[Any]) -> Job:
    alert, problem = _load_json(row[1], "alert")
    if problem is None and not isinstance(alert, dict):
        problem = f"the stored alert is JSON {type(alert).__name__}, not an object"
    if problem is not None:
        return Job(str(row[0]), {}, int(row[2]), problem)
    return Job(str(row[0]), alert, int(row[2]))


@dataclass
class _Sql:
    """The SQL that differs between the two backends."""

    now: str
    claim_lock: str
    placeholder: str = "%s"
    extra: dict[str, str] = field(default_factory=dict)

    def q(self, text: str) -> str:
        """Rewrite ``%s`` placeholders and ``NOW`` for this backend."""
        text = text.replace("NOW", self.now).replace("CLAIM_LOCK", self.claim_lock)
        return text.replace("%s", self.placeholder)


class _SqlStore:
    """The store logic shared by both backends; subclasses supply connections."""

    sql: _Sql

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[Any]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    def accept(self, alerts: Sequence[Alert]) -> list[Accepted]:
        out: list[Accepted] = []
        q = self.sql.q
        insert = q(
            "INSERT INTO investigations (id, fingerprint, starts_at, alertname, service, alert_json,"
            " status, resolved, resolved_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, 'queued',"
            " %s, %s, NOW) ON CONFLICT DO NOTHING"
        )
        resolve = q("UPDATE investigations SET resolved = 1, resolved_at = %s WHERE id = %s")
        with self._tx(durable=True) as cur:
            for alert in alerts:
                inv_id = investigation_id(alert.fingerprint, alert.starts_at)
                resolved = alert.status == "resolved"
                resolved_at = (alert.ends_at or alert.starts_at) if resolved else None
                cur.execute(
                    insert,
                    (
                        inv_id,
                        alert.fingerprint,
                        alert.starts_at,
                        alert.name,
                        alert.service,
                        json.dumps(alert_to_json(alert)),
                        int(resolved),
                        resolved_at,
                    ),
                )
                if cur.rowcount == 1:
                    out.append(Accepted(inv_id, alert.fingerprint, "new"))
                elif resolved:
                    cur.execute(resolve, (resolved_at, inv_id))
                    out.append(Accepted(inv_id, alert.fingerprint, "resolved"))
                else:
                    out.append(Accepted(inv_id, alert.fingerprint, "duplicate"))
        return out

    def claim(self, owner: str, lease: float, limit: int = 1) -> list[Job]:
        sql = self.sql.q(
            "UPDATE investigations SET status = 'running', lease_owner = %s,"
            " lease_until = NOW + %s, started_at = NOW, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM investigations WHERE status = 'queued'"
            " OR (status = 'running' AND lease_until < NOW)"
            " ORDER BY received_at LIMIT %s CLAIM_LOCK)"
            " RETURNING id, alert_json, attempts"
        )
        with self._tx() as cur:
            cur.execute(sql, (owner, lease, limit))
            rows = cur.fetchall()
        return [_job(r) for r in rows]

    def renew(self, inv_id: str, owner: str, lease: float) -> bool:
        sql = self.sql.q(
            "UPDATE investigations SET lease_until = NOW + %s"
            " WHERE id = %s AND lease_owner = %s AND status = 'running'"
        )
        with self._tx() as cur:
            cur.execute(sql, (lease, inv_id, owner))
            return bool(cur.rowcount == 1)

    def finish(
        self, inv_id: str, owner: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> bool:
        if status not in ("done", "failed"):
            raise ValueError(f"finish status must be done or failed, not {status!r}")
        sql = self.sql.q(
            "UPDATE investigations SET status = %s, result_json = %s, error = %s,"
            " finished_at = NOW, lease_owner = NULL, lease_until = NULL"
            " WHERE id = %s AND lease_owner = %s AND status = 'running'"
        )
        payload = json.dumps(result) if result is not None else None
        with self._tx() as cur:
            cur.execute(sql, (status, payload, error, inv_id, owner))
            return bool(cur.rowcount == 1)

    def get(self, inv_id: str) -> Record | None:
        with self._tx() as cur:
            cur.execute(
                self.sql.q(f"SELECT {_COLUMNS} FROM investigations WHERE id = %s"), (inv_id,)
            )
            row = cur.fetchone()
        return _record(row) if row else None

    def query(self, q: Query) -> list[Record]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("status", q.status),
            ("service", q.service),
            ("alertname", q.alertname),
            ("fingerprint", q.fingerprint),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if q.resolved is not None:
            where.append("resolved = %s")
            args.append(int(q.resolved))
        if q.since is not None:
            where.append("starts_at >= %s")
            args.append(q.since)
        if q.until is not None:
            where.append("starts_at <= %s")
            args.append(q.until)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = self.sql.q(
            f"SELECT {_COLUMNS} FROM investigations{clause}"
            " ORDER BY starts_at DESC, id LIMIT %s OFFSET %s"
        )
        with self._tx() as cur:
            cur.execute(sql, (*args, q.limit, q.offset))
            rows = cur.fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._tx() as cur:
            cur.execute("SELECT status, COUNT(*) FROM investigations GROUP BY status")
            rows = cur.fetchall()
            cur.execute(
                self.sql.q(
                    "SELECT COUNT(*) FROM investigations WHERE status = 'failed' AND error LIKE %s"
                ),
                (QUARANTINED + "%",),
            )
            quarantined = cur.fetchone()
        out = dict.fromkeys(STATUSES, 0)
        out.update({str(r[0]): int(r[1]) for r in rows})
        out["quarantined"] = int(quarantined[0]) if quarantined else 0
        return out

    def prune(self, older_than: float) -> int:
        sql = self.sql.q(
            "DELETE FROM investigations WHERE status IN ('done', 'failed') AND received_at < %s"
        )
        with self._tx() as cur:
            cur.execute(sql, (older_than,))
            return max(int(cur.rowcount), 0)

    def ping(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()


class SQLiteStore(_SqlStore):
    """A store in one SQLite file, in WAL mode (one connection per thread).

    ``synchronous`` is ``FULL`` by default for accepting alerts: an accepted
    alert survives a power loss, not only a crash of the process. Claims and
    results commit with ``NORMAL`` (crash-safe; after a power loss they are
    redone once their lease lapses). Several processes may share the file
    (claims are single statements under SQLite's write lock).
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = str(path)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}: use FULL, NORMAL or EXTRA")
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.sql = _Sql(
            now="(julianday('now') - 2440587.5) * 86400.0", claim_lock="", placeholder="?"
        )
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(
                    f"SQLite store {self.path}: cannot open it (cannot create its folder: "
                    f"{err.strerror}); choose another --store path"
                ) from err
            _create_private(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as err:
                raise StoreError(
                    f"SQLite store {self.path}: cannot open it ({err}); check the --store path "
                    "and that its folder is writable"
                ) from err
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Cursor]:
        conn = self._conn()
        # One writer at a time inside this process: SQLite's own busy handler
        # backs off in sleeps of up to 100 ms, far too coarse for webhook latency.
        with self._write_lock:
            # Only accepting alerts must survive a power loss. A lost claim or result
            # is redone once its lease lapses, so those commits skip the fsync
            # (WAL with synchronous=NORMAL still survives a crash of the process).
            level = self._synchronous if durable else "NORMAL"
            if getattr(self._local, "sync", None) != level:
                conn.execute(f"PRAGMA synchronous={level}")
                self._local.sync = level
            yield from self._tx_locked(conn)

    def _tx_locked(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
        try:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except sqlite3.Error as err:
            raise StoreError(f"SQLite store {self.path}: {err}") from err

    def migrate(self) -> None:
        with self._tx() as cur:
            for stmt in _SCHEMA:
                cur.execute(stmt)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class PostgresStore(_SqlStore):
    """A store in PostgreSQL (psycopg 3, pooled), shared by any number of replicas."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as err:  # pragma: no cover - depends on the install
            raise StoreError(
                "a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]' psycopg-pool"
            ) from err
        self._psycopg = psycopg
        self.url = url
        self.sql = _Sql(
            now="extract(epoch from clock_timestamp())", claim_lock="FOR UPDATE SKIP LOCKED"
        )
        try:
            # One direct connection first: it fails fast, with the server's own reason,
            # where the pool would retry until its timeout.
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as err:
            raise StoreError(
                scrub(
                    f"PostgreSQL store {_redact(url)}: cannot connect ({str(err).strip()}); "
                    "check the --store URL and that the server is up",
                    url,
                )
            ) from None
        except Exception as err:  # a malformed URL: psycopg's message may quote it
            raise StoreError(
                scrub(
                    f"PostgreSQL store {_redact(url)}: cannot use this URL "
                    f"({type(err).__name__}); write postgresql://user@host:port/dbname",
                    url,
                )
            ) from None
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, timeout=10.0
        )
        self._pool.open(wait=True, timeout=10.0)

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[Any]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as err:
            raise StoreError(
                scrub(f"PostgreSQL store {_redact(self.url)}: {err}", self.url)
            ) from None
        except TimeoutError as err:
            raise StoreError(
                scrub(f"PostgreSQL store {_redact(self.url)}: no connection ({err})", self.url)
            ) from None

    def migrate(self) -> None:
        with self._tx() as cur:
            # Replicas start together: serialize their CREATE TABLE IF NOT EXISTS.
            cur.execute("SELECT pg_advisory_xact_lock(7270615)")
            for stmt in _SCHEMA:
                cur.execute(stmt)

    def close(self) -> None:
        self._pool.close()


def _create_private(path: str) -> None:
    """Create the store file readable by its owner only (it holds alerts and results).

    SQLite gives its -wal and -shm files the database file's mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as err:
        raise StoreError(
            f"SQLite store {path}: cannot create it ({err.strerror}); choose another --store path"
        ) from err
    os.close(fd)


_SECRET_PARAMS = re.compile(r"(?i)((?:^|[?&\s])(?:password|sslpassword|passfile)=)[^&\s]*")


def _redact(url: str) -> str:
    """The URL without its password (userinfo or ``password=``), for messages and logs."""
    out = _SECRET_PARAMS.sub(r"\1***", url)
    if "://" in out:
        scheme, rest = out.split("://", 1)
        authority, sep, tail = rest.partition("/")
        if "@" in authority:
            creds, host = authority.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            authority = f"{user}:***@{host}" if ":" in creds else authority
        out = f"{scheme}://{authority}{sep}{tail}"
    return out


def url_secrets(url: str) -> list[str]:
    """The passwords written in a connection URL (to scrub from any message)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for key, value in parse_qsl(parts.query, keep_blank_values=False):
            if key.lower() in ("password", "sslpassword") and value:
                found.append(value)
    except ValueError:
        pass
    for m in _SECRET_PARAMS.finditer(url):
        value = url[m.end(1) : m.end()]
        if value:
            found += [value, unquote(value)]
    return sorted({s for s in found if len(s) >= 1}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


def open_store(target: str) -> Store:
    """A store for ``target``: a ``postgresql://`` URL, or a SQLite file path."""
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target)
    path = target.removeprefix("sqlite://") if target.startswith("sqlite://") else target
    return SQLiteStore(path)
