"""The workers' ``torch.distributed`` gloo group: shared by the ``allreduce`` transports of data-parallel
(gradients, ``data_parallel``) and model-parallel MADDPG (actions, ``model_parallel``).

Why gloo through ``torch.distributed`` and not ``ray.util.collective``: the latter's gloo backend needs
``pygloo``, which has no wheels for current Pythons. The price of a process group is fault tolerance:
a gloo group cannot lose a member and continue. A group is therefore disposable: every collective and
the rendezvous have a timeout (``distributed.collective_timeout_s``; a killed peer usually fails the
survivors' collectives at once, as its sockets close), a failed collective raises ``GroupBroken``, and
the coordinator re-forms the group on a new port (``form_group``) once the dead worker is back.

Each worker process is in at most one group (the default process group). The group's TCP store lives
on worker 0's node, on a port free there when the group forms. Across machines, gloo binds the address
the worker's hostname resolves to; set ``GLOO_SOCKET_IFNAME`` in the workers' environment if that is
not routable.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from datetime import timedelta
from typing import Any

from torch import Tensor

log = logging.getLogger("maestro")


class GroupBroken(RuntimeError):
    """A collective of the workers' gloo group failed (a peer died or timed out)."""


def rendezvous() -> tuple[str, int]:
    """``(ip, port)`` for a new group's TCP store: this node's address and a port free on it now."""
    import ray

    ip = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return ip, int(s.getsockname()[1])


def join(ip: str, port: int, world: int, rank: int, timeout_s: float) -> bool:
    """Leave any group, then join the gloo group at ``tcp://ip:port`` as ``rank`` of ``world`` (blocks
    until every rank has joined); ``False`` if the rendezvous failed or timed out."""
    import torch.distributed as dist

    leave()
    try:
        dist.init_process_group("gloo", init_method=f"tcp://{ip}:{port}", world_size=world, rank=rank, timeout=timedelta(seconds=timeout_s))
    except Exception as err:  # noqa: BLE001 - any rendezvous failure: the coordinator retries with a new port
        log.warning("joining the gloo group at %s:%d as rank %d of %d failed: %s", ip, port, rank, world, err)
        return False
    return True


def leave() -> None:
    """Destroy this process's gloo group, if any (also a broken one)."""
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def all_reduce(t: Tensor) -> float:
    """Sum ``t`` in place over the group; returns the seconds spent; ``GroupBroken`` if the group failed."""
    import torch.distributed as dist

    t0 = time.perf_counter()
    try:
        dist.all_reduce(t)
    except Exception as err:  # noqa: BLE001 - gloo raises RuntimeError subclasses that vary across torch versions
        raise GroupBroken(f"{type(err).__name__}: {err}") from err
    return time.perf_counter() - t0


def all_gather(t: Tensor) -> tuple[list[Tensor], float]:
    """Every rank's ``t`` (same shape and dtype on all ranks), in rank order, and the seconds spent;
    ``GroupBroken`` if the group failed."""
    import torch
    import torch.distributed as dist

    t0 = time.perf_counter()
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    try:
        dist.all_gather(out, t)
    except Exception as err:  # noqa: BLE001
        raise GroupBroken(f"{type(err).__name__}: {err}") from err
    return out, time.perf_counter() - t0


# The three remote methods of a group member (a Ray actor class with a ``world`` attribute assigns them:
# ``rendezvous = gloo.member_rendezvous`` ...), which ``form_group`` calls.
def member_rendezvous(self: Any) -> tuple[str, int]:
    return rendezvous()


def member_join(self: Any, ip: str, port: int, world: int, rank: int, timeout_s: float) -> bool:
    self.world = world if join(ip, port, world, rank, timeout_s) else 0
    return self.world > 0


def member_leave(self: Any) -> None:
    leave()
    self.world = 0


def form_group(pool: Any, world: int, timeout_s: float, attempts: int, what: str) -> None:
    """(Re)form the gloo group of the workers of ``pool`` (``ray_utils.WorkerPool``; each worker has the
    remote methods ``leave_group``, ``rendezvous`` and ``join_group(ip, port, world, rank, timeout_s)``)
    on a fresh port, rank = the worker's index; retried while workers die during the rendezvous."""
    for attempt in range(attempts):
        pool.call("leave_group")
        rv = pool.call("rendezvous", (), only=[0])[0]
        if rv is None:  # worker 0 died (and was restarted): ask again
            continue
        ok = pool.call("join_group", [(rv[0], rv[1], world, k, timeout_s) for k in range(world)])
        if all(ok):
            return
        log.warning("forming the %s gloo group failed (attempt %d); retrying on a new port", what, attempt + 1)
    raise RuntimeError(f"could not form the gloo group of the {world} {what} workers")
