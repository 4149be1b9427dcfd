#!/usr/bin/env python3
"""Enqueue Celery tasks with a real Celery producer, for the provider tests.

The tests compare what our providers count against what Celery itself wrote, so this
script must go through Celery/kombu (not raw broker commands).

Usage:
  produce.py --broker URL --queue NAME --count N [--priority P]
             [--priority-steps 0,3,6,9] [--sep SEP] [--prefix PREFIX] [--max-priority N]
             [--task NAME --args JSON_LIST] [--sleep SECONDS] [--sleeps JSON_LIST]

--sleep SECONDS is short for --task wpa.test.sleep --args [SECONDS].
--sleeps [S1, S2, ...] sends one wpa.test.sleep(Si) per entry, in order (--count is then
the list's length, and may be omitted).
--at [T1, T2, ...] (with --sleeps, as many entries) sends task i at Ti seconds after the
producer is ready (sleeping in between), for arrivals spread over time.

Sends `wpa.test.noop(i)` by default; with --task, that task with the same --args each time.
Prints one JSON line: {"sent": N, "ids": [task ids], "sent_at": [Unix seconds each send
returned]}.
"""
import argparse
import json
import sys
import time

from celery import Celery


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--priority", type=int, default=None)
    parser.add_argument("--priority-steps", default=None,
                        help="comma-separated kombu priority steps (Redis)")
    parser.add_argument("--sep", default=None, help="kombu priority separator (Redis)")
    parser.add_argument("--prefix", default=None, help="kombu global_keyprefix (Redis)")
    parser.add_argument("--max-priority", type=int, default=None,
                        help="x-max-priority of the queue (RabbitMQ)")
    parser.add_argument("--task", default="wpa.test.noop")
    parser.add_argument("--args", default=None,
                        help="JSON list of task arguments (default: [i])")
    parser.add_argument("--sleep", type=float, default=None,
                        help="send wpa.test.sleep(SECONDS) instead of wpa.test.noop(i)")
    parser.add_argument("--sleeps", default=None,
                        help="JSON list of seconds: one wpa.test.sleep per entry")
    parser.add_argument("--at", default=None,
                        help="JSON list of send times, seconds after start (with --sleeps)")
    args = parser.parse_args()
    fixed_args = json.loads(args.args) if args.args is not None else None
    if args.sleep is not None:
        args.task, fixed_args = "wpa.test.sleep", [args.sleep]
    # One process for a whole mixed batch: a Python start per task would spread a burst
    # over seconds.
    per_task = None
    if args.sleeps is not None:
        per_task = [[float(s)] for s in json.loads(args.sleeps)]
        args.task, args.count = "wpa.test.sleep", len(per_task)
    if args.count is None:
        parser.error("--count is required (unless --sleeps is given)")

    app = Celery("wpa_test_producer", broker=args.broker)
    transport_options = {}
    if args.priority_steps is not None:
        transport_options["priority_steps"] = [int(s) for s in args.priority_steps.split(",")]
    if args.sep is not None:
        transport_options["sep"] = args.sep
    if args.prefix is not None:
        transport_options["global_keyprefix"] = args.prefix
    app.conf.broker_transport_options = transport_options
    if args.max_priority is not None:
        from kombu import Queue
        app.conf.task_queues = [
            Queue(args.queue, routing_key=args.queue,
                  queue_arguments={"x-max-priority": args.max_priority})
        ]

    options = {"queue": args.queue, "routing_key": args.queue}
    if args.priority is not None:
        options["priority"] = args.priority
    send_times = json.loads(args.at) if args.at is not None else None
    if send_times is not None and (per_task is None or len(send_times) != len(per_task)):
        parser.error("--at needs --sleeps with as many entries")
    ids = []
    sent_at = []
    with app.connection_for_write() as conn:
        producer = app.amqp.Producer(conn)
        start = time.time()
        for i in range(args.count):
            if send_times is not None:
                delay = start + float(send_times[i]) - time.time()
                if delay > 0:
                    time.sleep(delay)
            if per_task is not None:
                task_args = per_task[i]
            else:
                task_args = fixed_args if fixed_args is not None else [i]
            result = app.send_task(args.task, args=task_args, producer=producer, **options)
            ids.append(result.id)
            sent_at.append(time.time())
    print(json.dumps({"sent": args.count, "ids": ids, "sent_at": sent_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
