#!/usr/bin/env python3
"""Enqueue RQ jobs and read RQ's own counts, for the provider tests.

The tests compare what the provider counts with what RQ itself says, so everything here
goes through RQ's API, never raw Redis commands. RQ_KEY_PREFIX in the environment changes
RQ's key prefix, as it does for any RQ program.

  rq_tool.py enqueue --url URL --queue Q --sleeps '[S1, S2, ...]' [--ledger KEY] [--in SECONDS]
      One rq_jobs.sleep(Si) per entry (scheduled SECONDS ahead with --in). Prints
      {"ids": [job ids]}.
  rq_tool.py count --url URL --queue Q
      Prints {"count": Queue.count, "started": StartedJobRegistry.count,
      "scheduled": ScheduledJobRegistry.count,
      "workers": [{"name", "hostname", "state", "job"}]} (Worker.all of the queue).
"""
import argparse
import json
import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from redis import Redis  # noqa: E402
from rq import Queue, Worker  # noqa: E402
from rq.registry import ScheduledJobRegistry, StartedJobRegistry  # noqa: E402

import rq_jobs  # noqa: E402


def enqueue(args, connection):
    queue = Queue(args.queue, connection=connection)
    ids = []
    for seconds in json.loads(args.sleeps):
        if args.in_seconds is not None:
            job = queue.enqueue_in(
                timedelta(seconds=args.in_seconds), rq_jobs.sleep, seconds, args.ledger
            )
        else:
            # A job timeout well above the sleep: RQ's default (180 s) would not cut the
            # tests' jobs, but say so.
            job = queue.enqueue(
                rq_jobs.sleep, seconds, args.ledger, job_timeout=int(seconds) + 60
            )
        ids.append(job.id)
    print(json.dumps({"ids": ids}))


def count(args, connection):
    queue = Queue(args.queue, connection=connection)
    workers = [
        {
            "name": w.name,
            "hostname": w.hostname,
            "state": w.get_state(),
            "job": w.get_current_job_id(),
        }
        for w in Worker.all(queue=queue)
    ]
    print(
        json.dumps(
            {
                "count": queue.count,
                "started": StartedJobRegistry(queue=queue).count,
                "scheduled": ScheduledJobRegistry(queue=queue).count,
                "workers": workers,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("enqueue", "count"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--queue", required=True)
        if name == "enqueue":
            p.add_argument("--sleeps", required=True)
            p.add_argument("--ledger", default=None)
            p.add_argument("--in", dest="in_seconds", type=float, default=None)
    args = parser.parse_args()
    connection = Redis.from_url(args.url)
    {"enqueue": enqueue, "count": count}[args.command](args, connection)


if __name__ == "__main__":
    main()
