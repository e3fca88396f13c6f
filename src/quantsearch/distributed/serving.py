"""Serving a sharded index on Ray: one actor per shard, fan-out from the caller, top-k merged here.

Each actor is a :class:`~.shard.ShardServer` (it opens its shard directory with ``Index.open``; the
directory must be readable at the same path on the node it runs on: a shared file system, or one
node). Actors restart without limit when they die, and reopen their shard from disk; what a call
in flight does then is the :class:`~.faults.FaultPolicy`'s choice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..exceptions import InvalidArgumentError, MissingDependencyError, QuantsearchError
from ..results import SearchResults
from .faults import FaultPolicy, gather
from .layout import ShardLayout, read_shard_manifest
from .shard import ShardGroup, ShardServer, decode_search_reply, search_request
from .sharded import ShardedBase

__all__ = ["RayShardedIndex", "open_sharded", "ensure_ray", "import_ray"]

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    """``import ray``, or :class:`MissingDependencyError` naming the extra."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            'the distributed mode needs Ray: pip install "quantsearch[distributed]"'
        ) from None
    return ray


#: Ray's system settings of a local Ray started here. Ray starts its workers at nice 15 by default,
#: so that the driver stays responsive; but a shard actor is on the latency path of every search
#: (the caller waits for it), and at nice 15 it gets a ~1/28 share of a core against any ordinary
#: process (nice 0) that wants the same core: the driver itself, or other jobs on a shared
#: machine (docs/benchmarks.md, issue 13). On a cluster started with ``ray start``, set
#: ``RAY_worker_niceness=0`` in the environment of ``ray start`` for the same effect.
LOCAL_RAY_SYSTEM_CONFIG: dict[str, Any] = {"worker_niceness": 0}


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to Ray: the running session if any, else ``address``, else a local Ray started now.

    Parameters
    ----------
    address : str, optional
        A cluster address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).
    num_cpus : int, optional
        CPUs of a local Ray started here (default: every core). A local Ray runs its workers at
        normal priority (:data:`LOCAL_RAY_SYSTEM_CONFIG`).

    Returns
    -------
    module
        The ``ray`` module, initialised.
    """
    ray = import_ray()
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                _system_config=LOCAL_RAY_SYSTEM_CONFIG,
            )
        logger.info("connected to Ray (%s)", address or "local")
    return ray


_ACTOR_CLASSES: dict[type, Any] = {}


def shard_actor_class(cls: type = ShardServer) -> Any:
    """:class:`ShardServer` (or :class:`ShardGroup`) as a Ray actor class (restarts without limit, no
    task retries of its own)."""
    if cls not in _ACTOR_CLASSES:
        ray = import_ray()
        _ACTOR_CLASSES[cls] = ray.remote(max_restarts=-1, max_task_retries=0)(cls)
    return _ACTOR_CLASSES[cls]


def _spread(i: int) -> Any:
    """Shard ``i``'s placement: round-robin over the live nodes, soft, so that a shard whose node is
    lost restarts on another one. (Ray's "SPREAD" leaves zero-CPU actors on one node.)"""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if not nodes:  # pragma: no cover - a connected driver always sees its node
        return "DEFAULT"
    return NodeAffinitySchedulingStrategy(node_id=nodes[i % len(nodes)], soft=True)


class RayShardedIndex(ShardedBase):
    """A sharded index served by one Ray actor per shard.

    Parameters
    ----------
    layout : ShardLayout
        From :func:`~.layout.read_shard_manifest`.
    policy : FaultPolicy, optional
        What a call does when a shard's actor dies (default: retry on the restarted actor).
    actor_options : dict, optional
        Extra ``.options()`` of the shard actors (default ``num_cpus=0``, shards placed round-robin
        over the live nodes with a soft node affinity).
    compiled : bool
        Send searches through a Ray compiled graph (shared-memory channels instead of one RPC
        per shard; Ray marks it experimental). Only with ``on_failure="retry"``: when the graph
        fails (a shard actor died, a channel error or timeout), it is torn down, that search
        goes the ordinary way (retried on the restarted actor per the policy), and the graph is
        compiled again on a later search. Writes and other calls always go the ordinary way.
        Ray's channels wait by polling (``sched_yield`` in a loop), so while the graph exists
        every shard actor and the caller keep a core busy even between searches: use it with
        at least as many cores as actors + 1 (docs/benchmarks.md, issue 13).
    actors : int, optional
        Number of actor processes (default: one per shard). Fewer than shards groups them:
        actor ``a`` serves shards ``a, a + actors, ...`` (:class:`~.shard.ShardGroup`) and searches
        them on parallel threads, so that a node with fewer cores than shards runs no more
        processes on a search's path than it has cores. A group's actor that dies takes all its
        shards with it; the fault policy then retries (or names) all of them.

    Use :func:`open_sharded`, which connects to Ray first.
    """

    def __init__(
        self,
        layout: ShardLayout,
        *,
        policy: FaultPolicy | None = None,
        actor_options: dict[str, Any] | None = None,
        compiled: bool = False,
        actors: int | None = None,
    ) -> None:
        super().__init__(layout)
        self.policy = policy if policy is not None else FaultPolicy()
        if compiled and self.policy.on_failure != "retry":
            raise InvalidArgumentError("compiled=True needs the fault policy on_failure='retry'")
        self.compiled = bool(compiled)
        self._graph: Any = None
        self._graph_lock = threading.Lock()
        self._graph_after = 0.0  # monotonic time before which a failed graph is not compiled again
        options = {"num_cpus": 0, **(actor_options or {})}
        n_actors = layout.n_shards if actors is None else check_positive_int(actors, "actors")
        if n_actors > layout.n_shards:
            raise InvalidArgumentError(f"actors={n_actors} exceeds the {layout.n_shards} shards")
        #: shards of each actor; None when every shard has its own ShardServer actor
        self.groups: list[list[int]] | None = None
        paths = [str(d.resolve()) for d in layout.shard_dirs]
        if n_actors == layout.n_shards:
            cls = shard_actor_class()
            self.actors = [
                cls.options(**{"scheduling_strategy": _spread(i), **options}).remote(p, layout.fingerprint)
                for i, p in enumerate(paths)
            ]
        else:
            self.groups = [list(range(a, layout.n_shards, n_actors)) for a in range(n_actors)]
            cls = shard_actor_class(ShardGroup)
            self.actors = [
                cls.options(**{"scheduling_strategy": _spread(a), **options}).remote(
                    group, [paths[s] for s in group], layout.fingerprint
                )
                for a, group in enumerate(self.groups)
            ]
        try:
            self._all("ping")  # every shard opened (a bad shard raises its error here)
        except BaseException:
            self.close()
            raise

    def _map(self, method: str, calls: dict[int, tuple[Any, ...]], **kwargs: Any) -> dict[int, Any]:
        what = f"{method} on {self.path.name}"
        if self.groups is None:

            def submit(s: int, is_retry: bool) -> Any:
                extra = {"resume": True} if (is_retry and method == "add") else {}
                return getattr(self.actors[s], method).remote(*calls[s], **kwargs, **extra)

            return gather(submit, calls, self.policy, what=what)
        per_actor = {a: {s: calls[s] for s in group if s in calls} for a, group in enumerate(self.groups)}
        per_actor = {a: part for a, part in per_actor.items() if part}

        def submit_group(a: int, is_retry: bool) -> Any:
            extra = {"resume": True} if (is_retry and method == "add") else {}
            return self.actors[a].map.remote(method, per_actor[a], {**kwargs, **extra})

        answers = gather(submit_group, per_actor, self.policy, what=what, members=self._members)
        return {s: answer for part in answers.values() for s, answer in part.items()}

    def _members(self, a: int) -> list[int]:
        """The shards of actor ``a`` (errors name shards, not actors)."""
        return [a] if self.groups is None else list(self.groups[a])

    def _in_shard_order(self, replies: list[Any]) -> list[Any]:
        """Per-shard search replies, in shard order, from one reply per actor."""
        if self.groups is None:
            return replies
        out: list[Any] = [None] * self.n_shards
        for group, part in zip(self.groups, replies, strict=True):
            for s, reply in zip(group, part, strict=True):
                out[s] = reply
        return out

    def _search_actors(self, request: tuple[Any, ...]) -> list[Any]:
        """One ``search_wire`` answer per actor, the ordinary way (one Ray call each)."""

        def submit(a: int, is_retry: bool) -> Any:
            return self.actors[a].search_wire.remote(request)

        answers = gather(
            submit, range(len(self.actors)), self.policy, what=f"search_wire on {self.path.name}",
            members=self._members,
        )  # fmt: skip
        return [answers[a] for a in range(len(self.actors))]

    def _search_shards(
        self,
        vectors: np.ndarray,
        k: int,
        oversampling: float | None,
        stages: Sequence[str] | None,
        with_payload: bool,
        exact: bool,
    ) -> list[tuple[SearchResults, int]]:
        # one argument of bytes and numbers each way (ShardServer.search_wire): cheaper for Ray to
        # serialize than numpy arrays and a SearchResults, which it pickles
        request = search_request(vectors, k, oversampling, stages, with_payload, exact)
        replies = self._compiled_search(request) if self.compiled else None
        if replies is None:
            replies = self._search_actors(request)
        return [decode_search_reply(r, vectors.shape[0]) for r in self._in_shard_order(replies)]

    def _compiled_search(self, request: tuple[Any, ...]) -> list[Any] | None:
        """Every shard's reply through the compiled graph, or None: no graph now, or it failed
        (torn down; the caller then goes the ordinary way, with the fault policy)."""
        import ray
        from ray.exceptions import RayTaskError

        with self._graph_lock:  # one execution at a time: the graph's channels are not shared
            if self._graph is None:
                if time.monotonic() < self._graph_after:
                    return None
                try:
                    from ray.dag import InputNode, MultiOutputNode

                    with InputNode() as inp:
                        dag = MultiOutputNode([a.search_wire.bind(inp) for a in self.actors])
                    self._graph = dag.experimental_compile()
                except Exception as exc:  # noqa: BLE001 - any failure: the ordinary path serves
                    logger.warning("could not compile the search graph (%s); plain calls", exc)
                    self._graph_after = time.monotonic() + 5.0
                    return None
            try:
                return list(ray.get(self._graph.execute(request), timeout=self.policy.timeout_s))
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, QuantsearchError):  # a bad request, not a fault: the graph is fine
                    raise cause from None
                self._drop_graph(exc)
            except Exception as exc:  # noqa: BLE001 - actor died, channel error, timeout
                self._drop_graph(exc)
            return None

    def release_graph(self) -> None:
        """Tear the compiled search graph down now; the next search compiles it again.

        Its channels wait by polling, so the shard actors of a graph keep cores busy while no
        search comes: an idle server, or a benchmark measuring something else, releases it.
        """
        with self._graph_lock:
            self._drop_graph()
            self._graph_after = 0.0

    def _drop_graph(self, exc: BaseException | None = None) -> None:
        if exc is not None:
            logger.warning("search graph failed (%s); tearing it down, plain calls", type(exc).__name__)
        graph, self._graph = self._graph, None
        self._graph_after = time.monotonic() + 1.0
        if graph is not None:
            with contextlib.suppress(Exception):
                graph.teardown()

    def close(self) -> None:
        """Stop the shard actors (each closes its index; nothing acknowledged is lost)."""
        import ray

        with self._graph_lock:
            self._drop_graph()
        for actor in self.actors:
            with contextlib.suppress(Exception):  # an actor already gone is what we want
                ray.kill(actor, no_restart=True)
        self.actors = []


def open_sharded(
    path: str | os.PathLike[str],
    *,
    ray_address: str | None = None,
    policy: FaultPolicy | None = None,
    actor_options: dict[str, Any] | None = None,
    compiled: bool = False,
    actors: int | None = None,
) -> RayShardedIndex:
    """Open a sharded index on Ray: connect (or start a local Ray), then start one actor per shard.

    Parameters
    ----------
    path : path-like
        The sharded index directory (``shards.json`` + shard directories).
    ray_address : str, optional
        Cluster to join; default: the running Ray session, else a local one started now.
    policy : FaultPolicy, optional
    actor_options : dict, optional
        Extra Ray options of the shard actors.
    compiled : bool
        Searches through a Ray compiled graph (see :class:`RayShardedIndex`).
    actors : int, optional
        Actor processes (default one per shard; fewer groups shards, see :class:`RayShardedIndex`).
    """
    layout = read_shard_manifest(path)
    ensure_ray(ray_address)
    return RayShardedIndex(
        layout, policy=policy, actor_options=actor_options, compiled=compiled, actors=actors
    )
