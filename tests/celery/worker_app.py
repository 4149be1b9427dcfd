"""A real Celery worker app for the provider tests (acks_late, one task per slot).

Run: WPA_TEST_BROKER=redis://... celery -A worker_app worker -Q QUEUE ...
The task name matches what produce.py sends (`wpa.test.noop`); each task sleeps
WPA_TEST_TASK_SECONDS (default 1). With task_acks_late the running task stays in kombu's
`unacked` hash, so the broker sees it as in flight. `wpa.test.sleep` (produce.py
--sleep SECONDS) sleeps for its argument instead, for the worker-event tests.
WPA_TEST_KEYPREFIX, when set, is kombu's Redis `global_keyprefix`.
"""
import os
import time

from celery import Celery

app = Celery("wpa_test_worker", broker=os.environ["WPA_TEST_BROKER"])
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
if os.environ.get("WPA_TEST_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["WPA_TEST_KEYPREFIX"]}


@app.task(name="wpa.test.noop")
def noop(i):
    time.sleep(float(os.environ.get("WPA_TEST_TASK_SECONDS", "1")))
    return i


@app.task(name="wpa.test.sleep")
def sleep(seconds):
    time.sleep(float(seconds))
    return seconds
