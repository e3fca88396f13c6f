"""Hypothesis strategies for hostile inputs to the library API.

Every call either works (and its result is checked: shapes, finite scores of real hits, the exact
top hit against brute force) or raises one of our exception types and leaves the index as it was.
No foreign exception type may escape (``RecursionError``, ``OverflowError``, ``TypeError``, ...).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import nested_dict, unit_vectors
from quantsearch import Index
from quantsearch.exceptions import QuantsearchError

DIM = 8
N = 24
EXAMPLES = int(os.environ.get("QUANTSEARCH_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---- strategies ----------------------------------------------------------------------------------------
huge_floats = st.sampled_from([3e38, -3e38, 1e30, 1e19, 6e4, 1e-45, -0.0, math.nan, math.inf, -math.inf])
floats = st.floats(allow_nan=True, allow_infinity=True, width=64) | huge_floats
dtypes = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex64, np.uint8]
)


@st.composite
def arrays(draw: st.DrawFn, rows: int | None = None) -> Any:
    """Hostile vector batches: any dtype, wrong shapes, NaN/inf, values near float32's limits."""
    shape = draw(
        st.tuples(st.just(rows) if rows is not None else st.integers(0, 4), st.integers(0, DIM + 2))
        | st.tuples(st.integers(0, 3))  # 1-D
        | st.tuples(st.integers(1, 2), st.integers(1, 2), st.just(DIM))  # 3-D
    )
    dtype = draw(dtypes)
    if np.issubdtype(dtype, np.floating):
        values = draw(hnp.arrays(np.float64, shape, elements=floats))
        with np.errstate(over="ignore", invalid="ignore"):
            array = values.astype(dtype)  # overflows to inf in float16/float32: hostile too
    else:
        array = draw(hnp.arrays(dtype, shape))
    return draw(st.sampled_from(["array", "list"])) == "list" and array.tolist() or array


good_rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(DIM)),
                       elements=st.floats(-1, 1, width=32))  # fmt: skip

json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)  # fmt: skip
hostile_leaf = json_leaf | st.sampled_from(
    [math.nan, math.inf, b"bytes", {1, 2}, object(), "\ud800", 10**5000]
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


ids_values = (
    st.integers(-(2**70), 2**70) | st.integers(2**63 - 3, 2**63 + 2) | st.text(max_size=8) | st.booleans()
    | st.none() | st.floats() | st.just("\ud800")
)  # fmt: skip
ks = (
    st.integers(-3, 2**70)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(max_size=3)
    | st.just(np.int64(3))
)
oversamplings = st.none() | st.floats() | st.integers(-2, 10**20) | st.booleans() | st.text(max_size=2)
stage_lists = (
    st.none()
    | st.lists(st.sampled_from(["int8", "binary", "float16", "", "int8 ", 3]), max_size=3)
    | st.text(max_size=5)
)


# ---- fixture and invariants ----------------------------------------------------------------------------
@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    x = unit_vectors(N, DIM, seed=11)
    with Index.create(tmp_path / "idx", DIM, calibration=x) as idx:
        idx.add(x, metadata=[{"i": i} for i in range(N)])
        yield idx


QUERIES = unit_vectors(3, DIM, seed=12)


def fingerprint(index: Index) -> tuple[int, list[list[Any]], bytes]:
    res = index.search(QUERIES, k=5, oversampling=100)
    return len(index), res.ids.tolist(), res.scores.tobytes()


def attempt(index: Index, call: Any) -> Any:
    """``call()``: our exception (then nothing changed) or a result."""
    before = fingerprint(index)
    try:
        return call()
    except QuantsearchError:
        assert fingerprint(index) == before
        return None


def check_results(index: Index, res: Any, nq: int, k: int) -> None:
    assert res.ids.shape == res.scores.shape == (nq, k)
    real = res.ids != -1
    assert np.isfinite(res.scores[real]).all()


# ---- properties -----------------------------------------------------------------------------------------
json_dicts = st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=4)


def column(values: st.SearchStrategy[Any], n: int) -> st.SearchStrategy[Any]:
    """A per-document column: mostly ``n`` entries (so the batch gets past its shape checks)."""
    exact = st.lists(values, min_size=n, max_size=n)
    return exact | exact | exact | st.lists(values, max_size=4) | st.sampled_from(["abc", b"x", {"a": 1}, 7])


texts_values = st.none() | st.text(max_size=5) | st.just("\udfff") | st.integers()


hostile_metadata = (
    st.sampled_from([33, 300, 1000, 6000]).map(nested_dict)
    | st.dictionaries(st.text(max_size=3) | st.integers(), hostile_leaf, min_size=1, max_size=3)
    | st.sampled_from([{"big": "x" * (2 << 20)}, [], "text", 5, {"nan": math.nan}])
    | st.dictionaries(st.text(max_size=5), json_values, max_size=4)
)


@FUZZ
@given(data=st.data(), n=st.integers(1, 3), hostile=st.sampled_from(["vectors", "ids", "texts", "metadata"]))
def test_add_hostile_batches(index: Index, data: st.DataObject, n: int, hostile: str) -> None:
    """One column of the batch is hostile, the others valid (so the batch reaches that column's checks)."""
    valid = hnp.arrays(np.float32, (n, DIM), elements=st.floats(-1, 1, width=32))
    vectors = data.draw(arrays() if hostile == "vectors" else valid, "vectors")
    ids = data.draw(column(ids_values, n) if hostile == "ids" else st.none(), "ids")
    texts = data.draw(column(texts_values, n) if hostile == "texts" else st.none(), "texts")
    metadata = data.draw(
        column(hostile_metadata, n) if hostile == "metadata" else column(json_dicts, n), "metadata"
    )
    count = len(index)
    added = attempt(index, lambda: index.add(vectors, ids=ids, texts=texts, metadata=metadata))
    if added is not None:
        assert len(index) == count + len(added)
        for i, doc_id in enumerate(added):
            doc = index.get(doc_id)
            assert doc["metadata"] == (None if metadata is None else metadata[i])


@FUZZ
@given(queries=arrays(), k=ks, oversampling=oversamplings, stages=stage_lists)
def test_search_hostile_queries(index: Index, queries: Any, k: Any, oversampling: Any, stages: Any) -> None:
    res = attempt(index, lambda: index.search(queries, k=k, oversampling=oversampling, stages=stages))
    if res is not None:
        q = np.atleast_2d(np.asarray(queries, np.float32))
        check_results(index, res, q.shape[0], int(k))


@FUZZ
@given(rows=good_rows, scale=st.sampled_from([1.0, 1e10, 1e17, 3e18, 1e25, 3e38]), k=st.integers(1, 5))
def test_finite_inputs_give_finite_scores_or_our_error(index: Index, rows: Any, scale: float, k: int) -> None:
    queries = rows.astype(np.float64) * scale
    res = attempt(index, lambda: index.search(queries, k=k, stages=("int8",), oversampling=N))
    norms = np.linalg.norm(queries, axis=1)
    if res is None:
        assert (norms > 1e19).any() or not np.isfinite(queries.astype(np.float32)).all()
        return
    check_results(index, res, queries.shape[0], k)


@FUZZ
@given(ids=st.lists(ids_values, max_size=3) | ids_values | st.sets(st.integers(0, N + 3), max_size=3))
def test_delete_and_get_hostile_ids(index: Index, ids: Any) -> None:
    for one in ids if isinstance(ids, (list, set)) else [ids]:
        attempt(index, lambda one=one: index.get(one))
        assert isinstance(one in index, bool)
    count = len(index)
    deleted = attempt(index, lambda: index.delete(ids))
    if deleted is not None:
        assert len(index) == count - deleted


@FUZZ
@given(kwargs=st.fixed_dictionaries({}, optional={
    "dim": st.integers(-2, 5) | st.floats() | st.text(max_size=2),
    "rescore": st.none() | st.text(max_size=6)
    | st.lists(st.sampled_from(["int8", "int4", "float16", "x", "int8"]), max_size=3),
    "truncate_dim": st.none() | st.integers(-1, 40) | st.floats(),
    "id_type": st.sampled_from(["int", "str", "uuid", 3]),
    "oversampling": st.floats() | st.integers(-1, 3),
    "model": st.none() | st.integers() | st.text(max_size=3),
    "backend": st.none() | st.integers() | st.text(max_size=3),
}))  # fmt: skip
def test_create_hostile_options(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("dim", DIM)
    # a fresh name per example: hypothesis may draw the same kwargs twice, and tmp_path is shared by all
    target = Path(tempfile.mkdtemp(dir=tmp_path)) / "new"
    try:
        Index.create(target, **kwargs).close()
    except QuantsearchError:
        assert not target.exists()  # a refused create leaves nothing
        return
    with Index.open(target) as created:
        assert len(created) == 0


# ---- filters ---------------------------------------------------------------------------------------------
filter_values = (
    st.integers(-3, N + 3) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=3)
    | st.booleans() | st.none() | st.lists(st.integers(-2, N + 2), max_size=3)
    | st.sampled_from([{"a": 1}, b"x", 10**30, -(10**30), math.nan])
)  # fmt: skip
filter_ops = st.sampled_from(["eq", "ne", "in", "gt", "gte", "lt", "lte", "$gte", "like", "", 5])
filter_fields = st.sampled_from(["i", "i.x", "missing", "", "1abc", "i j", "a" * 40, "__proto__"]) | st.text(
    max_size=4
)
numbers = st.integers(-2, N + 2) | st.floats(-2, N + 2)
scalar_ops = st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"])
valid_conditions = (
    numbers
    | st.text(max_size=2)
    | st.booleans()
    | st.dictionaries(
        st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), numbers, min_size=1, max_size=2
    )
    | st.fixed_dictionaries(
        {"in": st.lists(st.integers(-2, N + 2) | st.text(max_size=2), min_size=1, max_size=4)}
    )
)
valid_filters = st.dictionaries(st.sampled_from(["i", "missing"]), valid_conditions, min_size=1, max_size=2)
hostile_filters = (
    valid_filters  # half of the cases are accepted, so their results are checked too
    | st.dictionaries(
        filter_fields, filter_values | st.dictionaries(filter_ops, filter_values, max_size=2), max_size=3
    )
    | st.sampled_from([[], "i", 5, {"i": {}}, {"i": {"in": []}}, {"i": {"in": list(range(2000))}}])
)


def reference_match(value: Any, op: str, arg: Any) -> bool:
    """The documented semantics on the fixture's metadata ({"i": int}): JSON types must agree."""
    numeric = isinstance(value, int) and not isinstance(value, bool)
    same_type = numeric and isinstance(arg, (int, float)) and not isinstance(arg, bool)
    if op == "eq":
        return same_type and value == arg
    if op == "ne":
        return not (same_type and value == arg)
    if op == "in":
        return any(reference_match(value, "eq", a) for a in arg)
    comparisons = {"gt": value > arg, "gte": value >= arg, "lt": value < arg, "lte": value <= arg}
    return same_type and comparisons[op]


@given(spec=hostile_filters, k=st.integers(1, 6))
@FUZZ
def test_search_hostile_filters(index: Index, spec: Any, k: int) -> None:
    """A hostile filter is our error, never another type; an accepted one returns exactly the documents
    a reference evaluation of the filter admits, best first among them."""
    res = attempt(index, lambda: index.search(QUERIES, k=k, filter=spec, oversampling=100))
    event("rejected" if res is None else "accepted")
    if res is None:
        return
    check_results(index, res, QUERIES.shape[0], k)
    allowed = set(range(N))
    for field, cond in spec.items():
        ops = cond.items() if isinstance(cond, dict) else [("eq", cond)]
        for op, arg in ops:
            op = op.lstrip("$")
            if field == "i":
                allowed &= {i for i in range(N) if reference_match(i, op, arg)}
            else:  # a field no document has: only "ne" admits them
                allowed &= set(range(N)) if op == "ne" else set()
    for row in res.ids.tolist():
        hits = [i for i in row if i != -1]
        assert set(hits) <= allowed
        assert len(hits) == min(k, len(allowed))
