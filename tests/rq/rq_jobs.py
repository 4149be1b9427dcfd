"""Jobs for the RQ tests: a sleep that records when it started and finished.

Each run appends two JSON lines to the Redis list named by `ledger` (in the job's own
database, through the connection the worker runs it with):
  {"event": "start", "job": id, "pod": POD_NAME, "at": unix seconds}
  {"event": "finish", ...}
so a test can tell runs that finished from runs that were cut off.
"""
import json
import os
import time

from rq import get_current_job


def _record(ledger, event):
    job = get_current_job()
    entry = {
        "event": event,
        "job": job.id,
        "pod": os.environ.get("POD_NAME", ""),
        "at": time.time(),
    }
    job.connection.rpush(ledger, json.dumps(entry))


def sleep(seconds, ledger=None):
    if ledger:
        _record(ledger, "start")
    time.sleep(seconds)
    if ledger:
        _record(ledger, "finish")
    return seconds
