"""Crash recovery: SIGKILL the orchestration process at several points while 12,000 requests
flow, restart it from its recovery snapshots, and prove that no request is lost, that dedup
and caps hold across restarts, and that scheduled notifications fire once. The duplicate
sends that the at-least-once replay causes at the provider are counted and reported."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from notiflow.devservices import RedisServer
from notiflow.engine import Engine
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.reader import TopicReader
from notiflow.producer import produce_all
from notiflow.settings import Settings

FINAL = {"sent", "failed", "deduplicated", "rate_limited", "expired", "dead_lettered"}
PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")
CAPS = {
    "default": {
        "action": "drop",
        "caps": [{"channel": "email", "category": "capped", "limit": 3, "window_s": 3600}],
    }
}


def start_flow(env: dict[str, str], recovery_dir, log_path=None) -> subprocess.Popen:
    """The orchestration flow alone, with recovery; output appended to ``log_path``."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    args = [
        sys.executable,
        "-m",
        "bytewax.run",
        "flows.orchestrate:build_flow()",
        "-r",
        str(recovery_dir),
        "-s",
        "1",
        "-b",
        "0",
    ]
    return subprocess.Popen(
        args, env={**os.environ, **env}, start_new_session=True, stdout=log, stderr=log
    )


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def flows():
    """Start flow processes; every one still running is killed at teardown (even on failure)."""
    started: list[subprocess.Popen] = []

    def start(*args) -> subprocess.Popen:
        started.append(start_flow(*args))
        return started[-1]

    yield start
    for process in started:
        kill(process)


def req(rid: str, user: str, **fields) -> tuple[bytes, bytes]:
    body = {
        "id": rid,
        "tenant_id": "acme",
        "category": "general",
        "recipient": {"user_id": user, "email": f"{user}@example.test"},
        "content": {"email": {"subject": "s", "body": f"b {rid}"}},
        **fields,
    }
    return f"acme/{user}".encode(), orjson.dumps(body)


class Events:
    """Distinct events (by event_id) per notification, read from the events topic."""

    def __init__(self, kafka: dict, topic: str) -> None:
        self.config = kafka
        self.reader = TopicReader(kafka, topic)
        self.by_id: dict[str, dict[str, dict]] = defaultdict(dict)
        self._seen = 0

    def poll(self) -> Counter[str]:
        self.reader.poll(0.2)
        for message in self.reader.messages[self._seen :]:
            event = orjson.loads(message.value())
            self.by_id[event["notification_id"]][event["event_id"]] = event
        self._seen = len(self.reader.messages)
        return Counter(e["status"] for evs in self.by_id.values() for e in evs.values())

    def wait(self, status: str, count: int, timeout: float, process=None) -> bool:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.poll()[status] >= count:
                waited = time.monotonic() - started
                if waited > 20:
                    print(f"\nslow: {status} >= {count} took {waited:.0f}s", flush=True)
                return True
            if process is not None and process.poll() is not None:
                print(f"\nflow exited with {process.returncode}", flush=True)
                return False  # the caller's assertion message shows the flow's log
        if process is not None:  # stalled: have it dump its stacks into its log
            fresh = TopicReader(self.config, self.reader.topic)
            fresh.drain(quiet_s=2, timeout=20)
            fresh_statuses = Counter(orjson.loads(m.value())["status"] for m in fresh.messages)
            fresh.close()
            open_ids = {
                rid: sorted(e["status"] for e in evs.values())
                for rid, evs in self.by_id.items()
                if not {e["status"] for e in evs.values()} & FINAL
            }
            print(
                f"\nSTALL: {len(open_ids)} notifications without a final event, e.g. "
                f"{list(open_ids.items())[:10]}; by status set: "
                f"{Counter(tuple(v) for v in open_ids.values()).most_common(8)}",
                flush=True,
            )
            print(
                f"\nSTALL: long-lived reader saw {len(self.reader.messages)} events, a fresh "
                f"reader {len(fresh.messages)}: {dict(fresh_statuses)}",
                flush=True,
            )
            process.send_signal(signal.SIGUSR1)
            time.sleep(1)
            if shutil.which("py-spy") or os.path.exists(PY_SPY):  # native frames, when present
                dump = subprocess.run(
                    [
                        PY_SPY if os.path.exists(PY_SPY) else "py-spy",
                        "dump",
                        "--native",
                        "--pid",
                        str(process.pid),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                print(dump.stdout[-8000:], flush=True)
        return False

    def wait_final(self, count: int, timeout: float, process=None) -> bool:
        """Wait until ``count`` notifications were sent or reported failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            totals = self.poll()
            if totals["sent"] + totals["failed"] >= count:
                return True
            if process is not None and process.poll() is not None:
                print(f"\nflow exited with {process.returncode}", flush=True)
                return False  # the caller's assertion message shows the flow's log
        return False

    def statuses(self, rid: str) -> Counter[str]:
        return Counter(e["status"] for e in self.by_id[rid].values())


@pytest.fixture(params=["no_ledger", "resend", "skip"])
def ledger_env(request, monkeypatch):
    """Without Redis (no ledger); with the send ledger resending unknown outcomes; with the
    ledger skipping them (reported failed instead)."""
    if request.param == "no_ledger":
        monkeypatch.delenv("REDIS_URL", raising=False)
        yield {}
        return
    with RedisServer() as server:
        env = {"REDIS_URL": server.url, "NOTIFLOW_LEDGER_IN_FLIGHT": request.param}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env


@pytest.mark.e2e
def test_sigkill_and_restart_loses_nothing(
    engine_env, ledger_env, smtp, flows, monkeypatch, tmp_path
):
    monkeypatch.setenv("NOTIFLOW_RATE_LIMITS", orjson.dumps(CAPS).decode())
    env = {
        **ledger_env,
        **engine_env,
        "NOTIFLOW_RATE_LIMITS": orjson.dumps(CAPS).decode(),
        "NOTIFLOW_METRICS_PORT": "0",
    }
    settings = Settings()
    kafka = {"bootstrap.servers": engine_env["KAFKA_BOOTSTRAP_SERVERS"]}
    ensure_topics(kafka, settings.flow_topics, 4)
    recovery = tmp_path / "recovery"
    Engine.init_recovery(recovery, 1)

    plain = [req(f"r{i}", f"u{i % 2000}") for i in range(10_000)]
    capped = [req(f"cap{u}-{k}", f"cu{u}", category="capped") for u in range(100) for k in range(5)]
    repeats = [req(f"r{i}", f"u{i % 2000}") for i in range(0, 10_000, 10)]  # 1,000 repeats

    events = Events(kafka, settings.events_topic)
    log = tmp_path / "flow.log"
    flow = flows(env, recovery, log)
    produce_all(kafka, settings.requests_topic, plain[:4000] + capped[:250])
    assert events.wait("sent", 1500, 60, flow), log.read_text()[-6000:]
    kill(flow)  # 1: mid-stream, sends in flight
    flow = flows(env, recovery, log)
    send_at = (datetime.now(UTC) + timedelta(seconds=20)).isoformat()  # held across crash 2
    scheduled = [req(f"s{i}", f"su{i}", send_at=send_at) for i in range(500)]
    produce_all(
        kafka, settings.requests_topic, plain[4000:8000] + repeats[:500] + capped[250:] + scheduled
    )
    assert events.wait("scheduled", 250, 60, flow), log.read_text()[-6000:]
    kill(flow)  # 2: while scheduled notifications are being held
    flow = flows(env, recovery, log)
    produce_all(kafka, settings.requests_topic, plain[8000:] + repeats[500:])
    assert events.wait("deduplicated", 600, 60, flow), log.read_text()[-6000:]
    kill(flow)  # 3: after repeats of pre-crash ids
    flow = flows(env, recovery, log)
    skip = ledger_env.get("NOTIFLOW_LEDGER_IN_FLIGHT") == "skip"
    try:
        assert events.wait_final(10_000 + 300 + 500, 120, flow), (
            events.poll(),
            Counter(s for i in range(500) for s in events.statuses(f"s{i}").elements()),
            sum(1 for m in smtp.messages if m.rcpt_tos[0].startswith("su")),
            send_at,
            datetime.now(UTC).isoformat(),
            log.read_text()[-3000:],
        )
        time.sleep(2)
        totals = events.poll()
    finally:
        kill(flow)
        events.reader.close()

    # no request lost: every id has its final outcome, exactly once per distinct event
    unknown = {
        rid
        for rid, evs in events.by_id.items()
        for e in evs.values()
        if e["status"] == "failed" and "outcome unknown" in (e["reason"] or "")
    }
    assert skip or not unknown
    for i in range(10_000):
        if f"r{i}" not in unknown:
            assert events.statuses(f"r{i}")["sent"] == 1, f"r{i}"
    for i in range(0, 10_000, 10):
        assert events.statuses(f"r{i}")["deduplicated"] == 1, f"r{i}"  # dedup held
    for u in range(100):  # caps held across restarts
        outcomes = Counter(
            s
            for k in range(5)
            for s in events.statuses(f"cap{u}-{k}").elements()
            if s in ("sent", "rate_limited") or (s == "failed" and f"cap{u}-{k}" in unknown)
        )
        assert outcomes["rate_limited"] == 2 and outcomes["sent"] + outcomes["failed"] == 3
    for i in range(500):  # scheduled: held across a crash, then fired once
        statuses = events.statuses(f"s{i}")
        assert statuses["scheduled"] == 1, (i, statuses)
        assert statuses["sent"] == 1 or f"s{i}" in unknown, (i, statuses)
    assert totals["sent"] + len(unknown) == 10_800

    # at-least-once at the provider: count what the replays sent twice
    per_notification = Counter(m.message["X-Notiflow-Notification-Id"] for m in smtp.messages)
    duplicates = sum(n - 1 for n in per_notification.values())
    missing = 10_800 - len(per_notification)
    mode = {
        "no_ledger": "without a ledger",
        "resend": "ledger, resend unknown",
        "skip": "ledger, skip unknown",
    }[ledger_env.get("NOTIFLOW_LEDGER_IN_FLIGHT", "no_ledger")]
    print(
        f"\nrecovery ({mode}): {smtp.count} emails for 10,800 notifications; "
        f"{duplicates} duplicate provider sends after 3 SIGKILLs; {len(unknown)} unknown "
        f"outcomes reported failed; {missing} not in the inbox"
    )
    if skip:  # no duplicates at all; only the sends in flight at a kill may be missing
        assert duplicates == 0
        assert missing <= len(unknown) <= 3 * 64
    else:
        assert missing == 0  # every notification reached the inbox
    if ledger_env.get("NOTIFLOW_LEDGER_IN_FLIGHT") == "resend":
        assert duplicates <= 3 * 64  # only sends in flight at a kill can repeat


@pytest.mark.e2e
def test_engine_recovery_dir_keeps_scheduled_notifications(engine_env, smtp, monkeypatch, tmp_path):
    """`notiflow run --recovery-dir`: stop the engine while a notification is scheduled; a
    new engine on the same directory sends it once, at its time."""
    monkeypatch.setenv("NOTIFLOW_RECOVERY_DIR", str(tmp_path / "recovery"))
    monkeypatch.setenv("NOTIFLOW_SNAPSHOT_INTERVAL_SECONDS", "1")
    settings = Settings()
    kafka = {"bootstrap.servers": engine_env["KAFKA_BOOTSTRAP_SERVERS"]}
    send_at = (datetime.now(UTC) + timedelta(seconds=8)).isoformat()
    events = Events(kafka, settings.events_topic)
    with Engine(settings) as engine:
        produce_all(kafka, settings.requests_topic, [req("later", "u-later", send_at=send_at)])
        assert events.wait("scheduled", 1, 60), engine.poll()
        time.sleep(2.5)  # a snapshot holds it
    assert smtp.count == 0
    assert any((tmp_path / "recovery" / "orchestrate").glob("*.sqlite3"))
    with Engine(settings) as engine:
        assert events.wait("sent", 1, 60), engine.poll()
        time.sleep(1)
    events.poll()
    events.reader.close()
    assert events.statuses("later") == {"accepted": 1, "scheduled": 1, "sent": 1}
    assert smtp.count == 1
