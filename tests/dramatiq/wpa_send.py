"""Sends `sleep` jobs through Dramatiq and prints what Dramatiq itself says of the queue.

    python3 wpa_send.py send <job-prefix> <seconds>... [--delay MS]   -> JSON list of job ids
    python3 wpa_send.py counts                                      -> JSON counts

Dramatiq has no public API for queue counts; `counts` prints what the Redis broker's
own code reads: `do_qsize` (the dispatch script's `qsize` command, which RedisBroker.join
waits on: messages of the queue and its delay queue not acked yet, whoever holds them),
and LLEN of the queue's list through the broker's own Redis client.
"""

import json
import sys

from wpa_actors import QUEUE, broker, sleep


def main(argv):
    command = argv[1]
    if command == "send":
        delay = None
        args = argv[2:]
        if "--delay" in args:
            i = args.index("--delay")
            delay = int(args[i + 1])
            args = args[:i] + args[i + 2 :]
        prefix, seconds = args[0], [float(s) for s in args[1:]]
        ids = []
        for i, s in enumerate(seconds):
            job = f"{prefix}-{i}"
            sleep.send_with_options(args=(job, s), delay=delay)
            ids.append(job)
        print(json.dumps(ids))
    elif command == "counts":
        print(
            json.dumps(
                {
                    "qsize": broker.do_qsize(QUEUE),
                    "llen": broker.client.llen(f"{broker.namespace}:{QUEUE}"),
                    "delay_llen": broker.client.llen(f"{broker.namespace}:{QUEUE}.DQ"),
                    "declared": sorted(broker.get_declared_queues()),
                }
            )
        )
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
