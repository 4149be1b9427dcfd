"""Names a Dramatiq worker's Redis connections so that the WorkerPodAutoScaler can tell
which pod each worker process runs in (queueURI `?client_names=true`).

Every connection the worker opens is named `dramatiq:<worker id>:<pod>` (CLIENT SETNAME):
the worker id is the RedisBroker's `broker_id`, the id Dramatiq writes to its heartbeats
and ack sets; the pod is $POD_NAME (set it from the downward API) or the host name, which
is the pod name in Kubernetes. Add it to the broker:

    broker = RedisBroker(url=...)
    broker.add_middleware(NameConnections())
"""

import os
import socket

from dramatiq.middleware import Middleware


class NameConnections(Middleware):
    def before_worker_boot(self, broker, worker):
        # Only worker processes: producers (web apps) have no ack sets to report.
        pod = os.environ.get("POD_NAME") or socket.gethostname()
        pool = broker.client.connection_pool
        pool.connection_kwargs["client_name"] = f"dramatiq:{broker.broker_id}:{pod}"
        # Connections opened before (none, usually) reconnect with the name.
        pool.disconnect()
