"""Simulation workers that a hanging ClientApp cannot keep.

Flower's Ray backend waits for a ClientApp's reply without limit, holding the worker (a Ray
actor) that runs it. A client that hangs takes one worker a round until none is left, the other
clients' messages queue behind it, and the run never ends: the simulation waits for its workers
before it reports the run's status. This backend stops waiting at the message's deadline (its
``created_at + ttl``: the server sets the TTL to the round's timeout, after which no one waits for
the reply) or when the ServerApp has returned, kills that actor and starts a fresh one in its
place. An actor that died (out of memory, a crash) is replaced as well, where Flower would put it
back into the pool and fail every message given to it from then on.

Flower 1.41 builds its backend inside ``vce_api.start_vce`` with no way to plug in another one;
``install`` swaps the class that ``start_vce`` builds. It must run in the simulation's process
before the backend is built: ``client.app`` calls it at import, and the simulation imports the
ClientApp (to check that it loads) before it builds its backend.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

# The module that builds the backend; present only in a process that runs a simulation.
_SIMULATION_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
# Flower runs the ServerApp in a thread of this function; Python names a thread after its target.
_SERVER_THREAD = "server_th_with_start_checks"
POLL_SECONDS = 0.5


def install() -> None:
    """Make the simulation in this process build ``ReclaimingRayBackend`` (no-op elsewhere)."""
    if _SIMULATION_MODULE not in sys.modules:
        return
    from flwr.server.superlink.fleet.vce.backend import raybackend

    if raybackend.RayBackend.__name__ != "ReclaimingRayBackend":
        raybackend.RayBackend = _reclaiming_backend(raybackend.RayBackend)


def _reclaiming_backend(ray_backend: type) -> type:
    import ray
    from flwr.common.constant import PARTITION_ID_KEY
    from ray.exceptions import RayActorError

    class ReclaimingRayBackend(ray_backend):
        """Flower's ``RayBackend`` whose workers end with their message's deadline."""

        def build(self, app_fn: Any) -> None:
            super().build(app_fn)
            # Started before the backend is built; none found: wait until the deadline only.
            self.server_threads = [t for t in threading.enumerate() if _SERVER_THREAD in t.name]

        def _server_running(self) -> bool:
            return not self.server_threads or any(t.is_alive() for t in self.server_threads)

        def _replace(self, future: Any) -> None:
            pool = self.pool
            ray.kill(pool._future_to_actor.pop(future))
            pool.pool.append(pool.create_actor_fn())

        def process_message(self, message: Any, context: Any) -> tuple[Any, Any]:
            partition = context.node_config[PARTITION_ID_KEY]
            deadline = message.metadata.created_at + message.metadata.ttl
            if time.time() >= deadline:
                raise TimeoutError(
                    f"the message to partition {partition} expired before a worker was free"
                )
            future = self.pool.submit(
                lambda actor, app_fn, msg, cid, ctx: actor.run.remote(app_fn, msg, cid, ctx),
                (self.app_fn, message, str(partition), context),
            )
            while not ray.wait([future], timeout=POLL_SECONDS)[0]:
                if time.time() >= deadline or not self._server_running():
                    self._replace(future)
                    why = "its message expired" if self._server_running() else "the run ended"
                    raise TimeoutError(
                        f"the ClientApp of partition {partition} was still running when {why}; "
                        "its worker was stopped and a fresh one started in its place"
                    )
            try:
                _, reply, updated = ray.get(future)
            except RayActorError:
                self._replace(future)
                raise
            except Exception:
                self.pool.add_actor_back_to_pool(future)
                raise
            self.pool.add_actor_back_to_pool(future)
            return reply, updated

    return ReclaimingRayBackend
