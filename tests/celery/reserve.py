#!/usr/bin/env python3
"""Hold Redis-transport messages unacknowledged, as a consuming Celery worker does.

Takes up to N messages with kombu's basic_get(no_ack=False): kombu records each one in
its `unacked` hash and `unacked_index` exactly as for a worker's prefetched (or
acks_late) tasks. Prints one JSON line {"held": n}, then waits until stdin is closed and
exits WITHOUT acking; kombu then restores the held messages to their queue, as it does
when a worker shuts down.

Usage:
  reserve.py --broker URL --queue NAME --count N
             [--priority-steps 0,3,6,9] [--sep SEP] [--prefix PREFIX]
             [--publish-default-exchange M]
             [--publish-topic M --exchange NAME --binding-key KEY --routing-key RK]

--publish-default-exchange first publishes M messages through the default exchange ""
(routing key = queue), so that their `unacked` entries carry an empty exchange.
--publish-topic declares a topic exchange NAME, binds the queue to it with KEY and
publishes M messages with routing key RK (delivered to the queue only if KEY matches).
"""
import argparse
import json
import sys

from kombu import Connection, Exchange, Producer, Queue


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--priority-steps", default=None)
    parser.add_argument("--sep", default=None)
    parser.add_argument("--prefix", default=None)
    parser.add_argument("--publish-default-exchange", type=int, default=0)
    parser.add_argument("--publish-topic", type=int, default=0)
    parser.add_argument("--exchange", default=None)
    parser.add_argument("--binding-key", default=None)
    parser.add_argument("--routing-key", default=None)
    args = parser.parse_args()

    transport_options = {}
    if args.priority_steps is not None:
        transport_options["priority_steps"] = [int(s) for s in args.priority_steps.split(",")]
    if args.sep is not None:
        transport_options["sep"] = args.sep
    if args.prefix is not None:
        transport_options["global_keyprefix"] = args.prefix

    with Connection(args.broker, transport_options=transport_options) as conn:
        channel = conn.channel()
        if args.publish_default_exchange:
            producer = Producer(channel)
            for i in range(args.publish_default_exchange):
                producer.publish({"n": i}, exchange="", routing_key=args.queue)
        if args.publish_topic:
            exchange = Exchange(args.exchange, type="topic")
            queue = Queue(args.queue, exchange, routing_key=args.binding_key)
            queue(channel).declare()
            producer = Producer(channel, exchange=exchange)
            for i in range(args.publish_topic):
                producer.publish({"n": i}, routing_key=args.routing_key)
        held = 0
        for _ in range(args.count):
            if channel.basic_get(args.queue, no_ack=False) is None:
                break
            held += 1
        print(json.dumps({"held": held}), flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
