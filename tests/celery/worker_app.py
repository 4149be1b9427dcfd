"""A real Celery worker app for the provider and pod-runner tests (one task per slot).

Run: WPA_TEST_BROKER=redis://... celery -A worker_app worker -Q QUEUE ...

Settings from the environment:
- WPA_TEST_ACKS_LATE: "1" (default) acknowledges a task after it ran, so a running task
  stays in kombu's `unacked` hash and the broker sees it as in flight; "0" acknowledges it
  when the worker takes it (Celery's default), so a worker killed mid-task loses it.
- WPA_TEST_KEYPREFIX: kombu's Redis `global_keyprefix`, when set.
- WPA_TEST_TASK_SECONDS: how long `wpa.test.noop` sleeps (default 1).
- WPA_TEST_RECORD_REDIS, WPA_TEST_RECORD_KEY: where `wpa.test.sleep` records its runs
  (Redis lists KEY:started and KEY:finished of JSON lines), so a test can count tasks that
  completed, were cut off mid-run, or never started.

`wpa.test.noop` is what produce.py sends by default; `wpa.test.sleep(seconds)` runs for the
given time.
"""
import json
import os
import time

from celery import Celery

app = Celery("wpa_test_worker", broker=os.environ["WPA_TEST_BROKER"])
app.conf.task_acks_late = os.environ.get("WPA_TEST_ACKS_LATE", "1") == "1"
app.conf.worker_prefetch_multiplier = 1
if os.environ.get("WPA_TEST_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["WPA_TEST_KEYPREFIX"]}

_recorder = None


def _record(stage, task):
    """Appends one run record to KEY:<stage>, if recording is configured."""
    global _recorder
    url = os.environ.get("WPA_TEST_RECORD_REDIS")
    key = os.environ.get("WPA_TEST_RECORD_KEY")
    if not url or not key:
        return
    if _recorder is None:
        import redis

        _recorder = redis.Redis.from_url(url)
    delivery = task.request.delivery_info or {}
    _recorder.rpush(
        f"{key}:{stage}",
        json.dumps({
            "id": task.request.id,
            "host": task.request.hostname,
            "at": time.time(),
            "redelivered": bool(delivery.get("redelivered")),
        }),
    )


@app.task(name="wpa.test.noop")
def noop(i):
    time.sleep(float(os.environ.get("WPA_TEST_TASK_SECONDS", "1")))
    return i


@app.task(name="wpa.test.sleep", bind=True)
def sleep(self, seconds):
    _record("started", self)
    time.sleep(float(seconds))
    _record("finished", self)
    return seconds
