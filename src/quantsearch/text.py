"""Text analysis for the lexical tier: lowercase, split into word tokens, drop stopwords, stem.

The recipe is the one bm25s applies by default (lowercase, the regex ``(?u)\\b\\w\\w+\\b``, stopword
removal, then a Snowball stemmer), so that BM25 rankings can be compared with it on the same tokens.
Stemming uses PyStemmer (extra ``lexical``), imported only when a stemmer is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import InvalidArgumentError, MissingDependencyError

__all__ = ["ENGLISH_STOPWORDS", "TextAnalyzer"]

#: Default token pattern: runs of two or more word characters (single letters and digits are dropped).
TOKEN_PATTERN = r"(?u)\b\w\w+\b"

#: English function words removed before stemming (pronouns, articles, auxiliaries, prepositions,
#: conjunctions and their contractions' stems as the token pattern splits them).
# fmt: off
ENGLISH_STOPWORDS: frozenset[str] = frozenset([
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "aren",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "couldn", "could", "did", "didn", "do", "does", "doesn", "doing", "don", "down", "during", "each",
    "few", "for", "from", "further", "had", "hadn", "has", "hasn", "have", "haven", "having", "he", "her",
    "here", "hers", "herself", "him", "himself", "his", "how", "if", "in", "into", "is", "isn", "it", "its",
    "itself", "just", "ll", "me", "mightn", "more", "most", "mustn", "my", "myself", "needn", "no", "nor",
    "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out",
    "over", "own", "re", "same", "shan", "she", "should", "shouldn", "so", "some", "such", "than", "that",
    "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those",
    "through", "to", "too", "under", "until", "up", "ve", "very", "was", "wasn", "we", "were", "weren",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "won", "wouldn",
    "would", "you", "your", "yours", "yourself", "yourselves",
])
# fmt: on

_STOPWORD_SETS: dict[str, frozenset[str]] = {"en": ENGLISH_STOPWORDS, "english": ENGLISH_STOPWORDS}


@dataclass(frozen=True)
class TextAnalyzer:
    """Turns texts into lists of index terms.

    Parameters
    ----------
    stopwords : "en", a sequence of str, or None
        Words removed after lowercasing (``"en"``: :data:`ENGLISH_STOPWORDS`; ``None``: keep all).
    stemmer : str or None
        A Snowball algorithm name of PyStemmer (``"english"``, ``"porter"``, ``"french"``, ...), or
        ``None`` for no stemming.
    token_pattern : str
        Regular expression whose matches are the tokens (:data:`TOKEN_PATTERN` by default).
    """

    stopwords: str | tuple[str, ...] | None = "en"
    stemmer: str | None = "english"
    token_pattern: str = TOKEN_PATTERN
    _stop: frozenset[str] = field(init=False, repr=False, compare=False)
    _split: Any = field(init=False, repr=False, compare=False)
    _stem: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stop = self.stopwords
        if isinstance(stop, str):
            if stop.lower() not in _STOPWORD_SETS:
                raise InvalidArgumentError(
                    f"stopwords must be one of {sorted(_STOPWORD_SETS)}, a list of words or None, "
                    f"got {stop!r}"
                )
            words = _STOPWORD_SETS[stop.lower()]
        elif stop is None:
            words = frozenset()
        elif isinstance(stop, Sequence) and all(isinstance(w, str) for w in stop):
            object.__setattr__(self, "stopwords", tuple(stop))
            words = frozenset(w.lower() for w in stop)
        else:
            raise InvalidArgumentError(f"stopwords must be 'en', a list of str or None, got {stop!r}")
        if not isinstance(self.token_pattern, str):
            raise InvalidArgumentError(f"token_pattern must be a str, got {self.token_pattern!r}")
        try:
            split = re.compile(self.token_pattern).findall
        except re.error as exc:
            raise InvalidArgumentError(
                f"token_pattern {self.token_pattern!r} is not a valid regex: {exc}"
            ) from None
        object.__setattr__(self, "_stop", words)
        object.__setattr__(self, "_split", split)
        object.__setattr__(self, "_stem", _stemmer(self.stemmer))

    def tokens(self, text: str) -> list[str]:
        """The index terms of one text, in order (repeats kept: they are term frequencies)."""
        words = [w for w in self._split(text.lower()) if w not in self._stop]
        return self._stem(words) if self._stem is not None else words

    def to_config(self) -> dict[str, Any]:
        """JSON form saved in the index manifest (read back by :meth:`from_config`)."""
        stop = list(self.stopwords) if isinstance(self.stopwords, tuple) else self.stopwords
        return {"stopwords": stop, "stemmer": self.stemmer, "token_pattern": self.token_pattern}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextAnalyzer:
        stop = config.get("stopwords", "en")
        return cls(
            stopwords=tuple(stop) if isinstance(stop, list) else stop,
            stemmer=config.get("stemmer", "english"),
            token_pattern=config.get("token_pattern", TOKEN_PATTERN),
        )


def _stemmer(name: str | None) -> Any:
    """PyStemmer's ``stemWords`` for the algorithm ``name`` (None: no stemming)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidArgumentError(f"stemmer must be a Snowball algorithm name or None, got {name!r}")
    try:
        import Stemmer
    except ImportError as exc:
        raise MissingDependencyError(
            'stemming needs PyStemmer: pip install "quantsearch[lexical]" (or pass stemmer=None)'
        ) from exc
    try:
        return Stemmer.Stemmer(name).stemWords
    except KeyError:
        raise InvalidArgumentError(
            f"unknown stemmer {name!r}; PyStemmer knows {sorted(Stemmer.algorithms())}"
        ) from None
