"""Dramatiq broker and actor for the WorkerPodAutoScaler tests.

Environment:
- WPA_TEST_DRAMATIQ_URL: Redis URL of the broker (redis://127.0.0.1:6379/15).
- WPA_TEST_DRAMATIQ_QUEUE: the queue the `sleep` actor is on.
- WPA_TEST_DRAMATIQ_HEARTBEAT_TIMEOUT: RedisBroker heartbeat_timeout in ms (default 60000).
- WPA_TEST_DRAMATIQ_MAINTENANCE: RedisBroker maintenance_chance out of 1000000 (default
  Dramatiq's 1000).
- WPA_TEST_DRAMATIQ_RECORD: Redis list the actor appends its start and finish records to.
- POD_NAME: recorded with each run (and used by NameConnections).
"""

import json
import os
import socket
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from wpa_names import NameConnections

URL = os.environ["WPA_TEST_DRAMATIQ_URL"]
QUEUE = os.environ["WPA_TEST_DRAMATIQ_QUEUE"]
RECORD = os.environ.get("WPA_TEST_DRAMATIQ_RECORD", "")

broker = RedisBroker(
    url=URL,
    heartbeat_timeout=int(os.environ.get("WPA_TEST_DRAMATIQ_HEARTBEAT_TIMEOUT", "60000")),
    maintenance_chance=int(os.environ.get("WPA_TEST_DRAMATIQ_MAINTENANCE", "1000")),
)
broker.add_middleware(NameConnections())
dramatiq.set_broker(broker)

_records = redis.Redis.from_url(URL)


def _record(job, event):
    if RECORD:
        entry = {
            "job": job,
            "event": event,
            "pod": os.environ.get("POD_NAME") or socket.gethostname(),
            "pid": os.getpid(),
            "worker": broker.broker_id,
            "at": time.time(),
        }
        _records.rpush(RECORD, json.dumps(entry))


# No retries: a run that raised would come back through the delay queue and blur what
# the tests count; a run cut by SIGKILL comes back through Dramatiq's maintenance anyway.
@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=3_600_000)
def sleep(job, seconds):
    _record(job, "start")
    time.sleep(seconds)
    _record(job, "finish")
