"""IVF candidate stage: agreement with the exact scan, recall against a float brute force,
persistence (reopen without rebuild, catch-up after a missed update, rebuild when stale), and the
write lifecycle (add, delete, compact)."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.display import format_info
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.index.ivf import IVF_FILE, IVFStage, spherical_kmeans

DIM = 64


def clustered(n: int, seed: int, *, dim: int = DIM, n_centres: int = 40, spread: float = 0.6) -> np.ndarray:
    """Unit vectors (n, dim) float32 around ``n_centres`` random directions (neighbour structure);
    the centres depend on ``dim`` only, so calls with other seeds draw from the same mixture."""
    centres = np.random.default_rng(dim).standard_normal((n_centres, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, n_centres, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Exact float32 top-k rows (nq, k) by inner product, over ``rows`` (default: all)."""
    rows = np.arange(x.shape[0]) if rows is None else rows
    scores = q @ x[rows].T
    return rows[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def build(path, x: np.ndarray, *, batches: int = 4, calibration: np.ndarray | None = None, **params) -> Index:
    """An index with an IVF stage (``params``), calibrated on ``calibration`` (default ``x``), holding
    ``x`` added in ``batches`` (ids = rows, metadata ``{"i": row}``)."""
    index = Index.create(
        path,
        x.shape[1],
        calibration=x if calibration is None else calibration,
        candidate_stage={"kind": "ivf", "params": params},
    )
    for chunk in np.array_split(np.arange(x.shape[0]), batches):
        index.add(x[chunk], ids=chunk.tolist(), metadata=[{"i": int(i)} for i in chunk])
    return index


def stage_of(index: Index) -> IVFStage:
    stage = index._state.stage
    assert isinstance(stage, IVFStage)
    return stage


def test_all_lists_probed_equals_the_exact_scan(tmp_path) -> None:
    x = clustered(3000, 0)
    q = clustered(40, 1)
    with (
        build(tmp_path / "ivf", x, nlist=20, min_rows=500) as ivf,
        Index.build(tmp_path / "exact", x) as exact,
    ):
        assert stage_of(ivf).is_trained
        for stages in ((), ("int8",)):
            a = ivf.search(q, k=10, nprobe=20, stages=stages, with_payload=False)
            b = exact.search(q, k=10, stages=stages, with_payload=False)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)


def test_recall_after_rescoring_against_float_brute_force(tmp_path) -> None:
    """Recall@10 after int8 rescoring, against the float brute force: rises with nprobe and reaches
    the exact pipeline's (the binary codes, not the lists, bound it)."""
    mixture = {"dim": 256, "n_centres": 300, "spread": 0.7}
    x, q = clustered(6000, 2, **mixture), clustered(100, 3, **mixture)
    truth = brute_force(x, q, 10)
    with (
        build(tmp_path / "ivf", x, nlist=30, min_rows=1000) as index,
        Index.build(tmp_path / "e", x) as exact,
    ):
        curve = [
            recall(index.search(q, k=10, nprobe=p, with_payload=False).ids, truth) for p in (1, 4, 8, 30)
        ]
        reference = recall(exact.search(q, k=10, with_payload=False).ids, truth)
    assert curve == sorted(curve) and curve[0] < curve[2], curve
    assert reference >= 0.95 and curve[-1] == reference, (curve, reference)
    assert curve[2] >= 0.85, curve  # 8 of 30 lists (lists trained on the first batch)


def test_automatic_nlist_retrains_as_the_index_grows(tmp_path) -> None:
    x = clustered(6000, 4)
    with build(tmp_path / "ivf", x, batches=4, min_rows=1000) as index:
        lists = stage_of(index)._lists
        assert lists is not None and lists.n_trained == 6000  # trained at 1500 rows, again at 4x that
        assert lists.nlist == round(2 * np.sqrt(6000))


def test_below_min_rows_the_scan_is_exact(tmp_path) -> None:
    x = clustered(400, 4)
    with build(tmp_path / "ivf", x, min_rows=1000) as index:
        assert not stage_of(index).is_trained
        assert not (tmp_path / "ivf" / IVF_FILE).exists()
        res = index.search(x[:20], k=1, stages=(), with_payload=False)
        assert res.ids[:, 0].tolist() == list(range(20))


def test_reopen_uses_the_saved_lists_without_rebuilding(tmp_path, monkeypatch) -> None:
    x = clustered(3000, 5)
    q = clustered(30, 6)
    with build(tmp_path / "ivf", x, nlist=30, min_rows=500) as index:
        before = index.search(q, k=10, with_payload=False)
        assigned = stage_of(index)._lists.assign.copy()  # type: ignore[union-attr]

    def no_training(self, codes):
        raise AssertionError("reopening must not retrain")

    monkeypatch.setattr(IVFStage, "_train", no_training)
    with Index.open(tmp_path / "ivf") as index:
        np.testing.assert_array_equal(stage_of(index)._lists.assign, assigned)  # type: ignore[union-attr]
        after = index.search(q, k=10, with_payload=False)
        np.testing.assert_array_equal(before.ids, after.ids)
        # adds after reopening are listed, and findable
        y = clustered(200, 7)
        index.add(y, ids=list(range(3000, 3200)))
        assert stage_of(index)._lists.assign.shape[0] == 3200  # type: ignore[union-attr]
        res = index.search(y, k=1, stages=("int8",), nprobe=30, with_payload=False)
        assert res.ids[:, 0].tolist() == list(range(3000, 3200))


def test_load_catches_up_with_rows_committed_after_the_lists(tmp_path) -> None:
    """A crash between the catalog commit and the stage update leaves older lists behind."""
    x = clustered(3000, 8)
    path = tmp_path / "ivf"
    with build(path, x[:2000], batches=2, calibration=x, nlist=25, min_rows=500):
        pass
    stale = (path / IVF_FILE).read_bytes()  # lists covering 2000 rows
    with Index.open(path) as index:
        index.add(x[2000:], ids=list(range(2000, 3000)))
    (path / IVF_FILE).write_bytes(stale)  # as if the process died before the update was saved
    with Index.open(path) as index, build(tmp_path / "fresh", x, batches=3, nlist=25, min_rows=500) as fresh:
        lists = stage_of(index)._lists
        assert lists is not None and lists.assign.shape[0] == 3000
        q = clustered(30, 9)
        a = index.search(q, k=10, nprobe=5, with_payload=False)
        b = fresh.search(q, k=10, nprobe=5, with_payload=False)
        np.testing.assert_array_equal(a.ids, b.ids)
    with np.load(path / IVF_FILE) as data:  # the catch-up was saved
        assert int(data["meta"][0]) == 3000


@pytest.mark.parametrize("damage", ["garbage", "missing", "other_generation"])
def test_unusable_lists_are_rebuilt(tmp_path, damage: str) -> None:
    x = clustered(2000, 10)
    path = tmp_path / "ivf"
    with build(path, x, nlist=20, min_rows=2000) as index:  # trained once, on every row
        q = clustered(20, 11)
        want = index.search(q, k=10, nprobe=6, with_payload=False).ids
    target = path / IVF_FILE
    if damage == "garbage":
        target.write_bytes(b"not an npz")
    elif damage == "missing":
        target.unlink()
    else:
        with np.load(target) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["meta"][1] += 1
        np.savez(target, **arrays)
    with Index.open(path) as index:
        assert stage_of(index)._lists is not None
        np.testing.assert_array_equal(index.search(q, k=10, nprobe=6, with_payload=False).ids, want)


def test_deleted_rows_never_returned_and_compaction_rebuilds(tmp_path) -> None:
    x = clustered(3000, 12)
    q = clustered(50, 13)
    with build(tmp_path / "ivf", x, nlist=20, min_rows=500) as index:
        gone = list(range(0, 3000, 2))
        index.delete(gone)
        res = index.search(q, k=10, nprobe=4, with_payload=False)
        assert not set(res.ids.ravel().tolist()) & set(gone)
        assert (res.ids >= 0).all()
        index.compact()
        with np.load(tmp_path / "ivf" / IVF_FILE) as data:
            covered, generation, trained = (int(v) for v in data["meta"])
        assert covered == trained == 1500 and generation == 1
        live = np.arange(1, 3000, 2)
        truth = live[brute_force(x[live], q, 10)]
        after = index.search(q, k=10, nprobe=20, with_payload=False)
        assert recall(after.ids, truth) >= 0.95
    with Index.open(tmp_path / "ivf") as index:  # reopening after compaction: no stale lists
        assert stage_of(index)._lists.assign.shape[0] == 1500  # type: ignore[union-attr]


def test_stage_options_and_config_are_checked(tmp_path) -> None:
    x = clustered(600, 14)
    with pytest.raises(InvalidArgumentError, match="unknown candidate stage"):
        Index.create(tmp_path / "a", DIM, candidate_stage="hnsw-nope")
    with pytest.raises(InvalidArgumentError, match="nprobe"):
        Index.create(tmp_path / "b", DIM, candidate_stage={"kind": "ivf", "params": {"nprobe": 0}})
    with pytest.raises(InvalidArgumentError, match="params"):
        Index.create(tmp_path / "c", DIM, candidate_stage={"kind": "ivf", "params": {"bogus": 1}})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with Index.build(tmp_path / "exact", x) as exact:
        with pytest.raises(InvalidArgumentError, match="nprobe"):
            exact.search(x[:2], k=3, nprobe=4)
        assert "candidate_stage" not in exact.manifest.to_dict()
    with build(tmp_path / "ivf", x, min_rows=100) as index:
        with pytest.raises(InvalidArgumentError, match="nprobe"):
            index.search(x[:2], k=3, nprobe=0)
        assert index.manifest.candidate_stage == {
            "kind": "ivf",
            "params": {"nlist": None, "nprobe": 16, "min_rows": 100, "retrain_growth": 4.0,
                       "iterations": 10, "seed": 0},
        }  # fmt: skip
        assert index.info()["candidate_stage"]["kind"] == "ivf"


def test_spherical_kmeans_finds_separated_clusters() -> None:
    rng = np.random.default_rng(15)
    centres = np.eye(8, dtype=np.float32) * 5
    labels = rng.integers(0, 8, 800)
    x = centres[labels] + rng.standard_normal((800, 8)).astype(np.float32) * 0.3
    got = spherical_kmeans(x, 8, iterations=20, rng=np.random.default_rng(0))
    assign = np.argmax(x @ got.T, axis=1)
    # every true cluster maps to one centroid and vice versa
    pairs = {(int(a), int(b)) for a, b in zip(labels, assign, strict=True)}
    assert len(pairs) == 8 and len({a for a, _ in pairs}) == 8 and len({b for _, b in pairs}) == 8
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)


def test_a_failed_save_of_the_lists_does_not_fail_the_add(tmp_path, monkeypatch) -> None:
    """The batch is committed before the lists are saved: a full disk there is logged, and the
    next open catches up from the catalog."""
    from quantsearch.exceptions import StorageError
    from quantsearch.index import ivf

    x = clustered(1500, 16)
    with build(tmp_path / "ivf", x[:1000], batches=1, nlist=8, min_rows=500) as index:

        def full(path, arrays):
            raise StorageError("writing failed: No space left on device")

        monkeypatch.setattr(ivf.layout, "save_arrays", full)
        index.add(x[1000:], ids=list(range(1000, 1500)))
        monkeypatch.undo()
        assert stage_of(index)._lists.assign.shape[0] == 1500  # type: ignore[union-attr]
    with np.load(tmp_path / "ivf" / IVF_FILE) as data:
        assert int(data["meta"][0]) == 1000  # the save failed
    with Index.open(tmp_path / "ivf") as index:
        assert stage_of(index)._lists.assign.shape[0] == 1500  # type: ignore[union-attr]
        assert index.search(x[1400:1401], k=1, nprobe=8, stages=()).ids[0, 0] == 1400


def test_filtered_probe_walks_lists_until_it_has_seen_enough_valid_rows(tmp_path) -> None:
    """Under a filter the stage keeps scanning lists in centroid order past ``nprobe`` until it has
    seen (widened) as many valid rows as an unfiltered probe scans: its candidates are all valid,
    none is missing, and they overlap the exact Hamming top-n over the valid rows about as much as
    the unfiltered candidates overlap the unfiltered exact top-n."""
    from quantsearch.kernels import hamming_topk
    from quantsearch.quantization import BinaryQuantizer

    x, q = clustered(8000, 20, dim=128), clustered(30, 21, dim=128)
    quantizer = BinaryQuantizer().fit(x)
    codes = quantizer.encode(x)
    stage = IVFStage(quantizer, nlist=40, nprobe=3, min_rows=1)
    stage.rebuilt(tmp_path, codes)
    everything = np.ones(len(x), bool)
    valid = np.random.default_rng(22).random(len(x)) < 0.15  # 1,200 rows: more than a probe scans

    def overlap(mask: np.ndarray) -> float:
        _, rows = stage.search(q, codes, 30, valid=mask)
        assert (rows >= 0).all() and mask[rows].all()
        _, exact = hamming_topk(quantizer.encode(q), codes, 30, valid=mask)
        return recall(rows, exact)

    plain, filtered = overlap(everything), overlap(valid)
    assert filtered >= plain - 0.05, (filtered, plain)


def test_other_code_families_probe_the_same_way_and_scan_with_their_own_kernel(tmp_path) -> None:
    """A RaBitQ candidate tier: the lists are chosen by the same probe and scanned by the
    quantizer's own scan; every list probed equals its exact scan, fewer lists lose little."""
    x, q = clustered(3000, 30), clustered(20, 31)
    from quantsearch.quantization import RaBitQQuantizer

    kwargs = {"binary": RaBitQQuantizer(1, "random"), "rescore": None}
    with (
        Index.create(tmp_path / "ivf", DIM, calibration=x, candidate_stage={"kind": "ivf", "params": {
            "nlist": 20, "min_rows": 500}}, **kwargs) as ivf,
        Index.create(tmp_path / "exact", DIM, calibration=x, **kwargs) as exact,
    ):  # fmt: skip
        ivf.add(x)
        exact.add(x)
        a = ivf.search(q, k=10, nprobe=20, with_payload=False)
        b = exact.search(q, k=10, with_payload=False)
        np.testing.assert_array_equal(a.ids, b.ids)
        few = ivf.search(q, k=10, nprobe=6, with_payload=False)
        assert recall(few.ids, b.ids) >= 0.8


# ---- training and assignment above FLAT_MAX lists (index/ivf_train.py) --------------------------------


def test_shortlist_assignment_is_the_argmax_over_the_hamming_nearest_centroids() -> None:
    """Each row goes to the best (float score) of the ``shortlist`` centroids nearest to its code in
    Hamming distance (checked row by row against numpy), and that is the exact argmax for nearly
    every row of clustered data."""
    from quantsearch.index.ivf_train import assign_rows
    from quantsearch.quantization import BinaryQuantizer

    x = clustered(3000, 30, dim=256, n_centres=60)
    quantizer = BinaryQuantizer().fit(x)
    codes = quantizer.encode(x)
    centroids = spherical_kmeans(quantizer.decode(codes), 120, iterations=5, rng=np.random.default_rng(1))
    decoded = quantizer.decode(codes)
    scores = decoded @ centroids.T
    got = assign_rows(quantizer.decode, codes, centroids, shortlist=4)
    bits = np.packbits(centroids > 0, axis=1)
    hamming = np.unpackbits(codes[:, None, :] ^ bits[None, :, :], axis=2).sum(axis=2)
    for i in range(0, 3000, 97):
        near = np.lexsort((np.arange(120), hamming[i]))[:4]  # ties to the smaller list, as the kernel
        assert got[i] == near[np.argmax(scores[i, near])]
    exact = np.argmax(scores, axis=1)
    assert np.mean(got == exact) >= 0.98
    np.testing.assert_array_equal(assign_rows(quantizer.decode, codes, centroids), exact)  # no shortlist


def test_lists_trained_with_shortlists_keep_the_recall_of_flat_training(tmp_path, monkeypatch) -> None:
    """Lowering FLAT_MAX puts a small index on the large-index path (shortlist k-means and
    assignment, sample decoded a block at a time): its recall after rescoring, against the float
    brute force, stays within 0.03 of the flat lists' at every nprobe."""
    from quantsearch.index import ivf_train

    mixture = {"dim": 256, "n_centres": 300, "spread": 0.7}
    x, q = clustered(6000, 2, **mixture), clustered(100, 3, **mixture)
    truth = brute_force(x, q, 10)
    curves = []
    for flat_max, block in ((10_000, ivf_train.BLOCK), (8, 1000)):
        monkeypatch.setattr(ivf_train, "FLAT_MAX", flat_max)
        monkeypatch.setattr(ivf_train, "BLOCK", block)  # several blocks per k-means pass
        with build(tmp_path / f"ivf{flat_max}", x, batches=1, nlist=30, min_rows=1000) as index:
            lists = stage_of(index)._lists
            assert lists is not None and lists.nlist == 30 and np.bincount(lists.assign).min() > 0
            curves.append(
                [recall(index.search(q, k=10, nprobe=p, with_payload=False).ids, truth) for p in (2, 4, 8)]
            )
    flat, short = curves
    assert all(s >= f - 0.03 for f, s in zip(flat, short, strict=True)), curves
    assert short[-1] >= 0.85, curves


def test_info_reports_the_ram_of_the_lists(tmp_path) -> None:
    n, nlist = 3000, 20
    index = build(tmp_path / "i", clustered(n, 0), nlist=nlist, min_rows=100)
    info = index.info()
    code_dim, code_bytes = DIM, DIM // 8
    # float32 + int8 centroids, scales, sign bits; list id and list-order position per row; offsets
    want = nlist * (4 * code_dim + code_dim + 4 + code_bytes) + n * (4 + 4) + (nlist + 1) * 8
    assert info["candidate_stage_ram_bytes"] == want
    assert "ivf structure" in format_info(info)
    exact = Index.create(tmp_path / "e", DIM, calibration=clustered(200, 1))
    assert exact.info()["candidate_stage_ram_bytes"] == 0
