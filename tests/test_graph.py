"""HNSW candidate stage: recall against a float brute force and against the exact pipeline, persistence
(reopen without rebuild, catch-up of an unsaved tail, rebuild when unusable), the write lifecycle (add,
delete, compact), filters (very selective ones scanned exactly), and target-recall calibration."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.index.graph import _HEADER, GRAPH_FILE, GraphStage
from quantsearch.quantization import RaBitQQuantizer
from test_ivf import brute_force, clustered, recall

MIXTURE = {"dim": 256, "n_centres": 300, "spread": 0.7}
U = np.random.default_rng(5).random(10_000)  # metadata "u" of row i: a filter "u < s" keeps a share s


def build(path, x: np.ndarray, *, batches: int = 4, **params) -> Index:
    """An index with an HNSW stage (``params``), calibrated on ``x``, holding ``x`` added in ``batches``
    (ids = rows, metadata ``{"i": row, "u": U[row]}``)."""
    index = Index.create(path, x.shape[1], calibration=x, candidate_stage={"kind": "hnsw", "params": params})
    for chunk in np.array_split(np.arange(x.shape[0]), batches):
        index.add(x[chunk], ids=chunk.tolist(), metadata=[{"i": int(i), "u": float(U[i])} for i in chunk])
    return index


def stage_of(index: Index) -> GraphStage:
    stage = index._state.stage
    assert isinstance(stage, GraphStage)
    return stage


def saved_header(path) -> tuple[int, int]:
    """``(rows covered, generation)`` of the saved graph."""
    _magic, covered, generation, _d, _n = struct.unpack(_HEADER.format, (path / GRAPH_FILE).read_bytes()[:64])
    return covered, generation


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(6000, 2, **MIXTURE), clustered(100, 3, **MIXTURE)


def test_recall_against_brute_force_and_the_exact_pipeline(tmp_path, data) -> None:
    """Recall@10 after int8 rescoring against the float brute force reaches the exact pipeline's
    (the binary codes bound both), and the graph's hits agree with the exact pipeline's."""
    x, q = data
    truth = brute_force(x, q, 10)
    with build(tmp_path / "g", x, min_rows=1000) as index, Index.build(tmp_path / "e", x) as exact:
        assert stage_of(index).n_graph == 6000
        want = exact.search(q, k=10, with_payload=False).ids
        reference = recall(want, truth)
        curve = {ef: index.search(q, k=10, ef=ef, with_payload=False).ids for ef in (100, 400)}
    assert reference >= 0.95
    assert recall(curve[400], truth) >= reference - 0.01
    assert recall(curve[100], want) >= 0.97 and recall(curve[400], want) >= 0.99


def test_below_min_rows_the_scan_is_exact(tmp_path) -> None:
    x = clustered(400, 4)
    with build(tmp_path / "g", x, min_rows=1000) as index, Index.build(tmp_path / "e", x) as exact:
        assert stage_of(index).n_graph == 0 and not (tmp_path / "g" / GRAPH_FILE).exists()
        a = index.search(x[:20], k=5, with_payload=False)
        b = exact.search(x[:20], k=5, with_payload=False)
        np.testing.assert_array_equal(a.ids, b.ids)


def test_reopen_uses_the_saved_graph_and_adds_insert(tmp_path, monkeypatch, data) -> None:
    x, q = data
    with build(tmp_path / "g", x[:3000], batches=1, min_rows=1000) as index:
        before = index.search(q, k=10, with_payload=False)

    def no_build(self, width):
        raise AssertionError("reopening must not rebuild")

    monkeypatch.setattr(GraphStage, "_new_graph", no_build)
    with Index.open(tmp_path / "g") as index:
        assert stage_of(index).n_graph == 3000
        np.testing.assert_array_equal(index.search(q, k=10, with_payload=False).ids, before.ids)
        index.add(x[3000:3200], ids=list(range(3000, 3200)))  # inserted, not rebuilt
        assert stage_of(index).n_graph == 3200
        res = index.search(x[3000:3200], k=1, with_payload=False)
        assert np.mean(res.ids[:, 0] == np.arange(3000, 3200)) >= 0.99
    covered, _ = saved_header(tmp_path / "g")
    assert covered == 3000  # 200 rows < save_fraction 0.1 of 3000: not saved yet
    with Index.open(tmp_path / "g") as index:  # the unsaved tail is inserted at open
        assert stage_of(index).n_graph == 3200
        index.add(x[3200:3600], ids=list(range(3200, 3600)))
    assert saved_header(tmp_path / "g")[0] == 3600  # 600 unsaved rows > 10%: saved


@pytest.mark.parametrize("damage", ["garbage", "missing", "other_generation", "flipped_byte"])
def test_unusable_graph_is_rebuilt(tmp_path, damage: str) -> None:
    x = clustered(2000, 10, dim=128)
    q = clustered(20, 11, dim=128)
    path = tmp_path / "g"
    with build(path, x, batches=1, min_rows=1000) as index:
        want = index.search(q, k=10, ef=500, with_payload=False).ids
    target = path / GRAPH_FILE
    raw = bytearray(target.read_bytes())
    if damage == "garbage":
        target.write_bytes(b"not a graph")
    elif damage == "missing":
        target.unlink()
    elif damage == "flipped_byte":
        raw[-100] ^= 0xFF
        target.write_bytes(bytes(raw))
    else:
        magic, covered, generation, digest, length = _HEADER.unpack_from(raw)
        raw[: _HEADER.size] = _HEADER.pack(magic, covered, generation + 1, digest, length)
        target.write_bytes(bytes(raw))
    with Index.open(path) as index:
        assert stage_of(index).n_graph == 2000
        got = index.search(q, k=10, ef=500, with_payload=False).ids
        assert recall(got, want) >= 0.99
    assert saved_header(path) == (2000, 0)  # the rebuilt graph was saved


def test_deletes_and_filters_never_return_masked_rows_and_compaction_rebuilds(tmp_path, data) -> None:
    x, q = data
    with build(tmp_path / "g", x, min_rows=1000) as index:
        gone = list(range(0, 6000, 2))
        index.delete(gone)
        res = index.search(q, k=10, with_payload=False)
        assert not set(res.ids.ravel().tolist()) & set(gone) and (res.ids >= 0).all()
        live = np.arange(1, 6000, 2)
        truth = live[brute_force(x[live], q, 10)]
        assert recall(res.ids, truth) >= 0.9
        index.compact()
        assert stage_of(index).n_graph == 3000 and saved_header(tmp_path / "g") == (3000, 1)
        after = index.search(q, k=10, with_payload=False)
        assert recall(after.ids, truth) >= recall(res.ids, truth) - 0.02
    with Index.open(tmp_path / "g") as index:
        assert stage_of(index).n_graph == 3000


@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01])
def test_filtered_recall_holds_as_the_filter_narrows(tmp_path, data, selectivity: float) -> None:
    """Recall@10 of a filtered search against the float brute force over the admitted rows stays at
    the exact filtered pipeline's at 50%, 10% and 1% of the rows (1%: the valid rows are scanned)."""
    x, q = data
    keep = np.flatnonzero(U[:6000] < selectivity)
    spec = {"u": {"lt": selectivity}}
    truth = keep[brute_force(x[keep], q, 10)]
    with (
        build(tmp_path / "g", x, min_rows=1000) as index,
        Index.build(tmp_path / "e", x, metadata=[{"u": float(u)} for u in U[:6000]]) as exact,
    ):
        got = index.search(q, k=10, filter=spec, with_payload=False).ids
        want = exact.search(q, k=10, filter=spec, with_payload=False).ids
    assert set(got.ravel().tolist()) <= set(keep.tolist())
    assert recall(got, truth) >= recall(want, truth) - 0.02
    if selectivity == 0.01:
        np.testing.assert_array_equal(got, want)  # scanned exactly


def test_target_recall_is_calibrated_persisted_and_met(tmp_path, data) -> None:
    x, q = data
    with build(tmp_path / "g", x, batches=1, min_rows=1000) as index, Index.build(tmp_path / "e", x) as exact:
        table = stage_of(index).calibration
        assert table is not None and (tmp_path / "g" / GraphStage.calibration_file).is_file()
        settings = [s for s, _ in table]
        assert settings == sorted(settings)
        want = exact.search(q, k=10, with_payload=False).ids
        for target in (0.9, 0.99):
            ef = stage_of(index).setting_for_recall(target)
            got = index.search(q, k=10, target_recall=target, with_payload=False).ids
            np.testing.assert_array_equal(got, index.search(q, k=10, ef=ef, with_payload=False).ids)
            # held-out queries (not the calibration's own rows) land near the target
            assert recall(got, want) >= target - 0.05
        # a target no calibrated setting reached: the exact scan, so the exact pipeline's answer
        stage_of(index)._calibration = [(16, 0.5), (32, 0.6)]
        assert stage_of(index).setting_for_recall(0.9) is None
        np.testing.assert_array_equal(index.search(q, k=10, target_recall=0.9, with_payload=False).ids, want)
        stage_of(index)._calibration = table
        with pytest.raises(InvalidArgumentError, match="not both"):
            index.search(q, k=10, ef=32, target_recall=0.9)
        for bad in (0, 1.5, "high"):
            with pytest.raises(InvalidArgumentError, match="target_recall"):
                index.search(q, k=10, target_recall=bad)
        assert exact.search(q[:2], k=3, target_recall=0.99).ids.shape == (2, 3)  # exact meets any target
    with Index.open(tmp_path / "g") as index:
        assert stage_of(index).calibration == table  # read back, not measured again


def test_target_recall_with_an_ivf_stage(tmp_path, data) -> None:
    x, q = data
    params = {"nlist": 30, "min_rows": 1000}
    index = Index.create(
        tmp_path / "i", x.shape[1], calibration=x, candidate_stage={"kind": "ivf", "params": params}
    )
    with index, Index.build(tmp_path / "e", x) as exact:
        index.add(x)
        table = index._state.stage.calibration
        assert (
            table is not None
            and table[-1][1] >= 0.99
            and [s for s, _ in table] == sorted(s for s, _ in table)
        )
        want = exact.search(q, k=10, with_payload=False).ids
        got = index.search(q, k=10, target_recall=0.9, with_payload=False).ids
        assert recall(got, want) >= 0.85


def test_options_and_config_are_checked(tmp_path) -> None:
    x = clustered(600, 14)
    with pytest.raises(InvalidArgumentError, match="ef"):
        Index.create(tmp_path / "a", x.shape[1], candidate_stage={"kind": "hnsw", "params": {"ef": 0}})
    with pytest.raises(InvalidArgumentError, match="binary"):
        Index.create(tmp_path / "b", x.shape[1], binary=RaBitQQuantizer(), candidate_stage="hnsw")
    with Index.build(tmp_path / "exact", x) as exact, pytest.raises(InvalidArgumentError, match="ef"):
        exact.search(x[:2], k=3, ef=4)
    with build(tmp_path / "g", x, min_rows=100) as index:
        with pytest.raises(InvalidArgumentError, match="nprobe"):
            index.search(x[:2], k=3, nprobe=4)
        with pytest.raises(InvalidArgumentError, match="ef"):
            index.search(x[:2], k=3, ef=0)
        assert index.manifest.candidate_stage == {
            "kind": "hnsw",
            "params": {"m": 16, "ef_construction": 40, "ef": 64, "min_rows": 100, "exact_fraction": 0.02,
                       "save_fraction": 0.1},
        }  # fmt: skip
    with build(tmp_path / "i", x, batches=1) as ivf_less:  # hnsw below min_rows takes ef, not nprobe
        assert ivf_less.search(x[:2], k=3, ef=8).ids.shape == (2, 3)


def test_info_reports_the_ram_of_the_graph(tmp_path) -> None:
    x = clustered(1500, 0, **MIXTURE)
    index = build(tmp_path / "g", x, m=8, min_rows=100)
    graph = stage_of(index)._graph
    # faiss keeps its own copy of the codes beside the links: at least both
    assert index.info()["candidate_stage_ram_bytes"] >= 1500 * (256 // 8) + 1500 * 2 * 8 * 4
    assert graph.ntotal == 1500
