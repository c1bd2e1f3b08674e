"""The investigation store, on SQLite and on a real PostgreSQL: keys, resolve, leases, fencing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from correlator.model import Alert
from correlator.service.store import Query, SQLiteStore, Store, StoreError, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = open_store(str(tmp_path / "store.db"))
    else:
        cluster = request.getfixturevalue("postgres")
        s = open_store(cluster.database(f"t_{uuid.uuid4().hex[:10]}"))
    s.migrate()
    s.migrate()  # idempotent
    yield s
    s.close()


def _alert(
    fp: str = "aa01", starts: float = 1000.0, status: str = "firing", **labels: str
) -> Alert:
    return Alert(
        fingerprint=fp,
        labels={"alertname": "Boom", "service": "api", **labels},
        starts_at=starts,
        ends_at=starts + 60 if status == "resolved" else None,
        status=status,
    )


def test_resends_are_one_investigation_and_resolved_marks_it(store: Store) -> None:
    first = store.accept([_alert(), _alert("bb02")])
    assert [a.outcome for a in first] == ["new", "new"]
    again = store.accept([_alert()])
    assert again[0].outcome == "duplicate" and again[0].id == first[0].id
    later = store.accept([_alert(starts=2000.0)])  # same alert firing again later: new occurrence
    assert later[0].outcome == "new" and later[0].id != first[0].id
    resolved = store.accept([_alert(status="resolved")])
    assert resolved[0].outcome == "resolved"
    record = store.get(first[0].id)
    assert record is not None and record.resolved and record.resolved_at == 1060.0
    assert record.status == "queued"
    assert store.counts()["queued"] == 3
    # A resolved notification for an alert never seen firing is still investigated.
    orphan = store.accept([_alert("cc03", status="resolved")])
    assert orphan[0].outcome == "new"
    got = store.get(orphan[0].id)
    assert got is not None and got.resolved


def test_claims_are_exclusive_and_only_the_lease_owner_can_finish(store: Store) -> None:
    [acc] = store.accept([_alert()])
    [job] = store.claim("w1", lease=30)
    assert job.id == acc.id and job.attempts == 1 and job.alert["fingerprint"] == "aa01"
    assert store.claim("w2", lease=30) == []
    assert store.renew(job.id, "w1", 30)
    assert not store.renew(job.id, "w2", 30)
    assert not store.finish(job.id, "w2", "done", {"x": 1}, None)
    assert store.finish(job.id, "w1", "done", {"x": 1}, None)
    assert not store.finish(job.id, "w1", "failed", None, "again")  # already finished
    record = store.get(job.id)
    assert record is not None and record.status == "done" and record.result == {"x": 1}
    assert store.claim("w2", lease=30) == []


def test_a_lapsed_lease_is_taken_over_and_the_old_owner_is_fenced(store: Store) -> None:
    store.accept([_alert()])
    [job] = store.claim("dead", lease=0.2)
    time.sleep(0.4)
    [again] = store.claim("alive", lease=30)
    assert again.id == job.id and again.attempts == 2
    assert not store.finish(job.id, "dead", "done", {"late": True}, None)
    assert store.finish(job.id, "alive", "failed", None, "ValueError: x")
    record = store.get(job.id)
    assert record is not None and record.error == "ValueError: x" and record.attempts == 2


def test_query_filters(store: Store) -> None:
    store.accept(
        [
            _alert("a1", 100.0),
            _alert("a2", 200.0, service="db"),
            _alert("a3", 300.0, alertname="Other"),
        ]
    )
    [job] = store.claim("w", 30)
    store.finish(job.id, "w", "done", {}, None)
    assert [r.fingerprint for r in store.query(Query())] == ["a3", "a2", "a1"]
    assert [r.fingerprint for r in store.query(Query(service="db"))] == ["a2"]
    assert [r.fingerprint for r in store.query(Query(alertname="Other"))] == ["a3"]
    assert [r.fingerprint for r in store.query(Query(since=150, until=250))] == ["a2"]
    assert [r.fingerprint for r in store.query(Query(status="done"))] == ["a1"]
    assert [r.fingerprint for r in store.query(Query(limit=1, offset=1))] == ["a2"]
    assert store.query(Query(fingerprint="a3"))[0].alertname == "Other"


def test_concurrent_claimers_never_share_work(store: Store) -> None:
    store.accept([_alert(f"f{i:03d}", 1000.0 + i) for i in range(60)])
    claimed: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        while jobs := store.claim(name, 30, limit=2):
            for j in jobs:
                with lock:
                    claimed.setdefault(j.id, []).append(name)
                assert store.finish(j.id, name, "done", {}, None)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(claimed) == 60
    assert all(len(owners) == 1 for owners in claimed.values())
    assert store.counts()["done"] == 60


def test_unreachable_stores_raise_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(tmp_path / "file" / "sub" / "s.db").migrate()
    with pytest.raises(StoreError, match=r"postgres:\*\*\*@127.0.0.1:1/"):
        open_store("postgresql://postgres:hunter2@127.0.0.1:1/x")
