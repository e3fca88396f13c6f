"""Random sequences of add / delete / reopen / refresh against a plain dict model of the index."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from quantsearch import Index
from quantsearch.exceptions import DuplicateIdError, UnknownIdError

DIM = 19  # not a multiple of 8: exercises the padding bits


class IndexMachine(RuleBasedStateMachine):
    """The model is ``{id: vector}``; after every step the index must agree with it exactly."""

    @initialize(seed=st.integers(0, 2**32 - 1))
    def create(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="qs-stateful-"))
        calibration = self.rng.standard_normal((64, DIM)).astype(np.float32)
        self.index = Index.create(self.tmp / "idx", DIM, rescore=["int8"], calibration=calibration)
        self.model: dict[int, np.ndarray] = {}
        self.next_id = 0

    def teardown(self) -> None:
        if hasattr(self, "index"):
            self.index.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(n=st.integers(1, 12))
    def add(self, n: int) -> None:
        vectors = self.rng.standard_normal((n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # so a vector's best match is itself
        ids = list(range(self.next_id, self.next_id + n))
        self.index.add(vectors, ids=ids, texts=[f"t{i}" for i in ids])
        self.next_id += n
        self.model.update(zip(ids, vectors, strict=True))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def add_duplicate_fails(self, data: st.DataObject) -> None:
        existing = data.draw(st.sampled_from(sorted(self.model)))
        vectors = self.rng.standard_normal((2, DIM)).astype(np.float32)
        try:
            self.index.add(vectors, ids=[self.next_id + 10_000, existing])
        except DuplicateIdError:
            return
        raise AssertionError("a duplicate id was accepted")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=5, unique=True))
        assert self.index.delete(ids) == len(ids)
        for i in ids:
            del self.model[i]

    @rule(missing=st.integers(10**6, 10**7))
    def delete_unknown_fails(self, missing: int) -> None:
        try:
            self.index.delete([missing])
        except UnknownIdError:
            return
        raise AssertionError("an unknown id was deleted")

    @rule()
    def compact(self) -> None:
        self.index.compact()
        info = self.index.info()
        assert info["rows"] == info["count"] == len(self.model) and info["segments"] <= 1

    @rule()
    def reopen(self) -> None:
        self.index.close()
        self.index = Index.open(self.tmp / "idx")

    @rule()
    def second_reader_sees_the_same(self) -> None:
        with Index.open(self.tmp / "idx") as reader:
            assert len(reader) == len(self.model)

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.model)
        if not self.model:
            return
        ids = np.array(sorted(self.model))
        vectors = np.stack([self.model[i] for i in ids])
        queries = self.rng.standard_normal((3, DIM)).astype(np.float32)
        k = len(ids)
        # Hamming ranking over every live document equals the brute force (ties by insertion order,
        # which is id order here because ids are assigned increasingly)
        res = self.index.search(queries, k=k, stages=())
        bits = (vectors > 0).astype(np.int64)
        qbits = (queries > 0).astype(np.int64)
        dist = (qbits[:, None, :] != bits[None, :, :]).sum(axis=2)
        order = np.lexsort((np.broadcast_to(ids, dist.shape), dist), axis=1)
        np.testing.assert_array_equal(res.ids, ids[order])
        np.testing.assert_array_equal(res.scores, -np.take_along_axis(dist, order, axis=1).astype(np.float32))
        # each document's own vector finds itself first after int8 rescoring of every candidate
        sample = ids[: min(4, k)]
        own = self.index.search(np.stack([self.model[i] for i in sample]), k=1, oversampling=k)
        assert own.ids[:, 0].tolist() == sample.tolist()
        assert self.index.get(int(sample[0]))["text"] == f"t{sample[0]}"


TestIndexStateful = IndexMachine.TestCase
TestIndexStateful.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
