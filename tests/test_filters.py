"""Filtered search: metadata conditions evaluated in SQLite, checked against a Python evaluation of
the same conditions and a float brute force over the matching documents; exact and IVF stages;
recall as the filter narrows; bad filters."""

from __future__ import annotations

import numpy as np
import pytest

from quantsearch import Index
from quantsearch.exceptions import InvalidArgumentError
from quantsearch.index.filters import parse_filter
from test_ivf import brute_force, clustered, recall

N = 4000


def metadata(n: int, seed: int) -> list[dict]:
    """Seeded metadata with strings, ints, floats, bools, nested objects and missing fields."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m: dict = {
            "lang": ["en", "de", "fr", "es"][int(rng.integers(0, 4))],
            "year": int(rng.integers(1990, 2030)),
            "score": float(rng.uniform(0, 1)),
            "flag": bool(rng.integers(0, 2)),
            "src": {"kind": ["web", "book"][i % 2]},
            "pct": i % 100,  # selectivity knob: pct < p keeps p% of the documents
        }
        if i % 7 == 0:
            del m["lang"]
        if i % 11 == 0:
            m["year"] = str(m["year"])  # a string, never equal to the number
        out.append(m)
    return out


def matches(m: dict | None, spec: dict) -> bool:
    """Reference evaluation of a filter in Python (strict JSON types)."""
    for field, cond in spec.items():
        value: object = m
        for part in field.split("."):
            value = value.get(part, KeyError) if isinstance(value, dict) else KeyError
        conds = cond if isinstance(cond, dict) else {"eq": cond}
        for op, want in conds.items():
            op = op.lstrip("$")
            if op == "ne":
                if value is not KeyError and same(value, want):
                    return False
                continue
            if value is KeyError:
                return False
            if op == "eq" and not same(value, want):
                return False
            if op == "in" and not any(same(value, w) for w in want):
                return False
            if op in ("gt", "gte", "lt", "lte"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    return False
                ok = {"gt": value > want, "gte": value >= want, "lt": value < want, "lte": value <= want}[op]
                if not ok:
                    return False
    return True


def same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def data():
    return clustered(N, 20), metadata(N, 21), clustered(60, 22)


def build(path, x, meta, **create):
    index = Index.create(path, x.shape[1], calibration=x, **create)
    for chunk in np.array_split(np.arange(len(x)), 3):
        index.add(x[chunk], ids=chunk.tolist(), metadata=[meta[i] for i in chunk])
    return index


SPECS = [
    {"lang": "en"},
    {"lang": {"in": ["de", "fr"]}},
    {"year": {"gte": 2000, "lt": 2010}},
    {"year": 2005},
    {"year": {"$gt": 2020}, "lang": {"$ne": "en"}},
    {"score": {"lte": 0.25}, "flag": True},
    {"flag": False, "src.kind": "book"},
    {"year": {"in": [1995, "1995", 2001]}},
    {"lang": {"ne": "es"}},
    {"nope": "x"},
]


@pytest.mark.parametrize("spec", SPECS)
def test_exact_filtered_search_equals_brute_force_over_the_matches(tmp_path, data, spec) -> None:
    x, meta, q = data
    allowed = np.flatnonzero([matches(m, spec) for m in meta])
    with build(tmp_path / "exact", x, meta, rescore=["float32"]) as index:
        res = index.search(q, k=10, filter=spec, oversampling=1000)
    k = min(10, allowed.size)
    if allowed.size == 0:
        assert (res.ids == -1).all()
        return
    truth = brute_force(x, q, k, rows=allowed)
    assert set(res.ids[res.ids >= 0].tolist()) <= set(allowed.tolist())
    assert recall(res.ids[:, :k], truth) == 1.0
    if allowed.size < 10:
        assert (res.ids[:, allowed.size :] == -1).all()
    for row_meta in res.metadata:
        assert all(matches(m, spec) for m in row_meta)


@pytest.mark.parametrize("pct", [50, 10, 1])
def test_ivf_recall_holds_as_the_filter_narrows(tmp_path, data, pct) -> None:
    x, meta, q = data
    spec = {"pct": {"lt": pct}}
    allowed = np.flatnonzero([m["pct"] < pct for m in meta])
    truth = brute_force(x, q, 10, rows=allowed)
    params = {"nlist": 64, "nprobe": 6, "min_rows": 1000}
    with build(tmp_path / "ivf", x, meta, candidate_stage={"kind": "ivf", "params": params}) as index:
        res = index.search(q, k=10, filter=spec)
        unfiltered = recall(index.search(q, k=10).ids, brute_force(x, q, 10))
    assert set(res.ids.ravel().tolist()) <= set(allowed.tolist())
    got = recall(res.ids, truth)
    assert got >= min(0.95, unfiltered - 0.03), (pct, got, unfiltered)


def test_filter_on_a_cluster_correlated_field_keeps_recall(tmp_path, data) -> None:
    """A filter matching one side of the space (30%, more than a probe scans, so the lists are
    used): the probe follows the valid rows and keeps the exact pipeline's recall."""
    x, meta, q = data
    direction = q[0]
    near = (x @ direction) > np.quantile(x @ direction, 0.7)
    meta2 = [dict(m, near=bool(f)) for m, f in zip(meta, near, strict=True)]
    truth = brute_force(x, q, 10, rows=np.flatnonzero(near))
    params = {"nlist": 64, "nprobe": 6, "min_rows": 1000}
    with build(tmp_path / "ivf", x, meta2, candidate_stage={"kind": "ivf", "params": params}) as index:
        got = recall(index.search(q, k=10, filter={"near": True}).ids, truth)
    with build(tmp_path / "exact", x, meta2) as index:
        reference = recall(index.search(q, k=10, filter={"near": True}).ids, truth)
    assert got >= reference - 0.03, (got, reference)


def test_filtered_search_sees_deletes_and_new_documents(tmp_path, data) -> None:
    x, meta, q = data
    with build(tmp_path / "exact", x, meta) as index:
        spec = {"lang": "en"}
        first = index.search(q[:1], k=5, filter=spec).ids[0].tolist()
        index.delete(first[:2])
        after = index.search(q[:1], k=5, filter=spec).ids[0].tolist()
        assert not set(first[:2]) & set(after)
        new_id = N + 1
        index.add(q[:1], ids=[new_id], metadata=[{"lang": "en"}])
        assert index.search(q[:1], k=1, filter=spec).ids[0, 0] == new_id
        assert index.search(q[:1], k=1, filter={"lang": "de"}).ids[0, 0] != new_id
        index.compact()  # rows renumbered: the filter's mask follows
        assert index.search(q[:1], k=1, filter=spec).ids[0, 0] == new_id


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lang=en", "JSON object"),
        ({"la ng": "en"}, "field"),
        ({"x;DROP": 1}, "field"),
        ({"year": {"between": [1, 2]}}, "unknown operator"),
        ({"year": {"gte": "2000"}}, "finite number"),
        ({"year": {"gte": float("nan")}}, "finite number"),
        ({"lang": {"in": []}}, "non-empty list"),
        ({"lang": {"in": "en"}}, "non-empty list"),
        ({"lang": {"in": [["en"]]}}, "string, number or boolean"),
        ({"lang": None}, "string, number or boolean"),
        ({"lang": {}}, "no operator"),
    ],
)
def test_bad_filters_raise_naming_the_problem(tmp_path, data, spec, message) -> None:
    x, meta, q = data
    with pytest.raises(InvalidArgumentError, match=message):
        parse_filter(spec)
    with build(tmp_path / "i", x[:100], meta[:100]) as index:
        with pytest.raises(InvalidArgumentError, match=message):
            index.search(q[:1], k=3, filter=spec)
        assert len(index) == 100  # nothing changed


def test_filter_values_are_bound_not_spliced(tmp_path, data) -> None:
    x, meta, q = data
    with build(tmp_path / "i", x[:50], [{"name": "a'b\") OR 1=1 --"}] + [{"name": "c"}] * 49) as index:
        res = index.search(q[:1], k=5, filter={"name": "a'b\") OR 1=1 --"})
        assert res.ids[0].tolist() == [0, -1, -1, -1, -1]


@pytest.mark.parametrize("pct", [100, 25, 4, 1])
def test_filters_widen_the_rescoring_candidates(tmp_path, data, pct) -> None:
    """Under a filter admitting a share s of the documents, k x oversampling / sqrt(s) candidates
    (at most x10, at most the admitted documents) are rescored."""
    from quantsearch.index.stages import FILTER_WIDEN_MAX

    x, meta, q = data
    admitted = sum(m["pct"] < pct for m in meta)
    with build(tmp_path / "exact", x, meta) as index:
        res = index.search(q[:3], k=10, oversampling=5, filter={"pct": {"lt": pct}} if pct < 100 else None)
    widen = min(FILTER_WIDEN_MAX, np.sqrt(N / admitted))
    assert res.candidates["rescore:int8"] == min(admitted, int(np.ceil(50 * widen)))
