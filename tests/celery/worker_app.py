"""A real Celery worker app for the provider and pod-runner tests (one task per slot).

Run: WPA_TEST_BROKER=redis://... celery -A worker_app worker -Q QUEUE ...

Settings from the environment:
- WPA_TEST_ACKS_LATE: "1" (default) acknowledges a task after it ran, so a running task
  stays in kombu's `unacked` hash and the broker sees it as in flight; "0" acknowledges it
  when the worker takes it (Celery's default), so a worker killed mid-task loses it.
- WPA_TEST_KEYPREFIX: kombu's Redis `global_keyprefix`, when set.
- WPA_TEST_PREFETCH: `worker_prefetch_multiplier` (default 1).
- WPA_TEST_REMOTE_CONTROL: "0" turns `worker_enable_remote_control` off (the worker then
  neither listens to nor declares its pidbox).
- WPA_TEST_TASK_SECONDS: how long `wpa.test.noop` sleeps (default 1).
- WPA_TEST_RECORD_REDIS, WPA_TEST_RECORD_KEY: where `wpa.test.sleep` records its runs
  (Redis lists KEY:started and KEY:finished of JSON lines), so a test can count tasks that
  completed, were cut off mid-run, or never started; also KEY:received (the worker took the
  task: prefetched or running) and KEY:cancelled (it got `cancel_consumer` for a queue).
- POD_IP: the simulated Pod's IP. A loopback one (127.x.y.z, not 127.0.0.1) is what the
  worker's connections to an AMQP broker are made from, so RabbitMQ sees each Pod at its own
  address, as in a cluster (a consumer's peer_host).

`wpa.test.noop` is what produce.py sends by default; `wpa.test.sleep(seconds)` runs for the
given time.
"""
import json
import os
import socket
import time

from celery import Celery
from celery.signals import task_received
from celery.worker.consumer import Consumer


def _connect_from_pod_ip():
    """Makes the worker's connections to its AMQP broker start from POD_IP (a loopback
    address), so the broker sees each Pod at its own address. Redis is left alone: in its
    protected mode it refuses loopback addresses other than 127.0.0.1 (and it has no
    per-consumer reports to map)."""
    from urllib.parse import urlsplit

    pod_ip = os.environ.get("POD_IP", "")
    broker = urlsplit(os.environ.get("WPA_TEST_BROKER", ""))
    if not pod_ip.startswith("127.") or pod_ip == "127.0.0.1" or broker.scheme != "amqp":
        return
    broker_port = broker.port or 5672
    connect = socket.socket.connect

    def connect_from_pod(sock, address):
        if (
            sock.family == socket.AF_INET
            and sock.type == socket.SOCK_STREAM
            and isinstance(address, tuple)
            and address[1] == broker_port
        ):
            try:
                sock.bind((pod_ip, 0))
            except OSError:
                pass  # already bound
        return connect(sock, address)

    socket.socket.connect = connect_from_pod


_connect_from_pod_ip()

app = Celery("wpa_test_worker", broker=os.environ["WPA_TEST_BROKER"])
app.conf.task_acks_late = os.environ.get("WPA_TEST_ACKS_LATE", "1") == "1"
app.conf.worker_prefetch_multiplier = int(os.environ.get("WPA_TEST_PREFETCH", "1"))
app.conf.worker_enable_remote_control = os.environ.get("WPA_TEST_REMOTE_CONTROL", "1") == "1"
if os.environ.get("WPA_TEST_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["WPA_TEST_KEYPREFIX"]}

_recorder = None


def _push(stage, task_id, host, redelivered=False):
    """Appends one record to KEY:<stage>, if recording is configured."""
    global _recorder
    url = os.environ.get("WPA_TEST_RECORD_REDIS")
    key = os.environ.get("WPA_TEST_RECORD_KEY")
    if not url or not key:
        return
    if _recorder is None:
        import redis

        _recorder = redis.Redis.from_url(url)
    _recorder.rpush(
        f"{key}:{stage}",
        json.dumps({"id": task_id, "host": host, "at": time.time(), "redelivered": redelivered}),
    )


def _record(stage, task):
    """One run record (KEY:started, KEY:finished) of a task."""
    delivery = task.request.delivery_info or {}
    _push(stage, task.request.id, task.request.hostname, bool(delivery.get("redelivered")))


@task_received.connect
def _on_task_received(request=None, **_):
    """KEY:received: the worker holds the task from here on (prefetched or running), which
    the started record alone does not show for a task waiting behind a running one."""
    if request is not None:
        _push("received", request.id, request.hostname)


# Celery has no signal for remote control commands, and the benchmarks need the worker's
# own record of when it was told to stop consuming (KEY:cancelled, the queue as "id"), to
# compare with when its Pod got SIGTERM.
_cancel_task_queue = Consumer.cancel_task_queue


def _cancel_task_queue_recorded(self, queue):
    _push("cancelled", queue, self.hostname)
    return _cancel_task_queue(self, queue)


Consumer.cancel_task_queue = _cancel_task_queue_recorded


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
