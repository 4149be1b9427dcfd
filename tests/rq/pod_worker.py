"""An RQ worker whose hostname is the Pod's name, for the tests.

RQ records `socket.gethostname()` as a worker's `hostname`, and in a Kubernetes Pod that is
the Pod's name, which is how the controller maps RQ workers to Pods. The tests run every
"Pod" on this one machine, so all workers would share its hostname; this class (given to
the real CLI with its documented option, `rq worker --worker-class pod_worker.PodWorker
--path tests/rq`) sets the hostname from POD_NAME, the name the test's pod runner gives
each worker, and changes nothing else.
"""
import os

from rq import Worker


class PodWorker(Worker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pod = os.environ.get("POD_NAME")
        # Only a worker that will work has a hostname (RQ leaves it None when it reads a
        # worker back from Redis).
        if pod and self.hostname is not None:
            self.hostname = pod
