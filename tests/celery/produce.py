#!/usr/bin/env python3
"""Enqueue Celery tasks with a real Celery producer, for the provider tests.

The tests compare what our providers count against what Celery itself wrote, so this
script must go through Celery/kombu (not raw broker commands).

Usage:
  produce.py --broker URL --queue NAME --count N [--priority P]
             [--priority-steps 0,3,6,9] [--sep SEP] [--prefix PREFIX] [--max-priority N]
             [--sleep SECONDS]

Sends `wpa.test.noop` tasks, or with --sleep `wpa.test.sleep` tasks taking SECONDS.

Prints one JSON line: {"sent": N}.
"""
import argparse
import json
import sys

from celery import Celery


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--priority", type=int, default=None)
    parser.add_argument("--priority-steps", default=None,
                        help="comma-separated kombu priority steps (Redis)")
    parser.add_argument("--sep", default=None, help="kombu priority separator (Redis)")
    parser.add_argument("--prefix", default=None, help="kombu global_keyprefix (Redis)")
    parser.add_argument("--max-priority", type=int, default=None,
                        help="x-max-priority of the queue (RabbitMQ)")
    parser.add_argument("--sleep", type=float, default=None,
                        help="send wpa.test.sleep(SECONDS) instead of wpa.test.noop(i)")
    args = parser.parse_args()

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
    with app.connection_for_write() as conn:
        producer = app.amqp.Producer(conn)
        for i in range(args.count):
            if args.sleep is None:
                app.send_task("wpa.test.noop", args=[i], producer=producer, **options)
            else:
                app.send_task("wpa.test.sleep", args=[args.sleep], producer=producer,
                              **options)
    print(json.dumps({"sent": args.count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
