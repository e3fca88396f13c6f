"""Several raylets on this machine (ray.cluster_utils.Cluster): shards spread over nodes, a node lost."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import unit_vectors
from quantsearch import Index
from quantsearch.distributed import ShardedIndex, create_sharded

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from quantsearch.distributed.serving import open_sharded  # noqa: E402

N, DIM, K = 900, 24, 5


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_shards_on_several_nodes_survive_a_lost_node(cluster, tmp_path):
    c, workers = cluster
    vectors = unit_vectors(N, DIM, seed=40)
    create_sharded(tmp_path / "s", DIM, 3, calibration=vectors)
    with ShardedIndex.open(tmp_path / "s") as local:
        local.add(vectors, list(range(N)))
    queries = unit_vectors(4, DIM, seed=41)
    with Index.build(tmp_path / "single", vectors, ids=list(range(N))) as single:
        want = single.search(queries, K, oversampling=N / K + 1)
    with open_sharded(tmp_path / "s") as index:

        def placement() -> dict[int, str]:
            return dict(enumerate(ray.get([a.node_id.remote() for a in index.actors])))

        nodes = set(placement().values())
        assert len(nodes) >= 2  # SPREAD: the shards' actors run on different raylets
        got = index.search(queries, K, exact=True)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        # lose a worker node that hosts a shard: its actor restarts elsewhere and reopens the shard
        victim = next(w for w in workers if w.node_id in nodes)
        c.remove_node(victim)
        got = index.search(queries, K, exact=True)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert victim.node_id not in set(placement().values())
        index.add(vectors[:3] * 0.5, [N, N + 1, N + 2])  # writes go on after the loss
        assert len(index) == N + 3
