"""Per-query SVM reranking (Karpathy's knn_vs_svm): the query is the only positive example.

For each query a linear SVM is trained to separate the query vector from its candidates' vectors;
candidates are then ranked by the SVM's decision function. The SVM weighs the dimensions in which the
query differs from its neighbourhood, instead of the plain inner product of kNN. scikit-learn
(extra ``svm``) is imported on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .exceptions import MissingDependencyError

__all__ = ["svm_scores"]


def _linear_svc() -> Any:
    try:
        from sklearn.svm import LinearSVC
    except ImportError as exc:
        raise MissingDependencyError(
            'SVM reranking needs scikit-learn: pip install "quantsearch[svm]"'
        ) from exc
    return LinearSVC


def svm_scores(query: np.ndarray, candidates: np.ndarray, *, c: float = 0.1) -> np.ndarray:
    """Decision values of a linear SVM trained on one query against its candidates.

    Parameters
    ----------
    query : ndarray of shape (dim,), float32
    candidates : ndarray of shape (n, dim), float32
        The candidates' vectors (float, or dequantized codes), the negatives of the training set.
    c : float
        The SVM's regularisation (knn_vs_svm uses 0.1).

    Returns
    -------
    scores : ndarray of shape (n,), float32
        Higher is more like the query.
    """
    linear_svc = _linear_svc()
    x = np.concatenate([query[None, :], candidates]).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.zeros(x.shape[0], np.int64)
    y[0] = 1
    clf = linear_svc(class_weight="balanced", C=c, max_iter=10_000, tol=1e-6, dual="auto")
    clf.fit(x, y)
    return np.asarray(clf.decision_function(x[1:]), np.float32)
