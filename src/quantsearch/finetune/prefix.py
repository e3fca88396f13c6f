"""Fine-tuning only the top transformer layers: the frozen lower layers' output is computed once per text.

With the embeddings and the first ``L - n`` layers of a BERT-like encoder frozen, their output for a
text never changes during training, so it is computed once (tokenization included) and kept in
float16; a training step then runs only the top ``n`` layers, the pooling and the modules after it
(e.g. the code head), forward and backward. On a CPU this makes a step several times cheaper than
running the whole encoder (``n = 1`` of MiniLM's 6 layers: roughly a sixth of the forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..exceptions import InvalidArgumentError


def _tokenize(model: Any, texts: list[str]) -> dict[str, Any]:
    fn = getattr(model, "preprocess", None) or model.tokenize  # preprocess: sentence-transformers >= 6
    return fn(texts)


def _encoder_parts(model: Any) -> tuple[Any, Any]:
    """The Hugging Face model inside a sentence-transformers ``Transformer`` and its layer list."""
    auto = getattr(model[0], "auto_model", None)
    layers = getattr(getattr(auto, "encoder", None), "layer", None)
    if auto is None or layers is None or not hasattr(auto, "embeddings"):
        raise InvalidArgumentError(
            "unfreeze_layers needs a BERT-like encoder (embeddings + encoder.layer), "
            f"got {type(auto).__name__}"
        )
    return auto, layers


def _additive_mask(torch: Any, attention: Any, dtype: Any) -> Any:
    """(b, 1, 1, s) mask added to the attention scores: 0 on tokens, the dtype's minimum on padding."""
    return (1.0 - attention[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _run_layers(torch: Any, layers: Sequence[Any], hidden: Any, attention: Any) -> Any:
    mask = _additive_mask(torch, attention, hidden.dtype)
    for layer in layers:
        out = layer(hidden, attention_mask=mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def trainable_top(model: Any, n_layers: int) -> list[Any]:
    """Freeze ``model`` except its top ``n_layers`` transformer layers and the modules after the
    transformer (pooling, normalisation, a code head); returns the parameters left trainable."""
    _, layers = _encoder_parts(model)
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= len(layers):
        raise InvalidArgumentError(f"unfreeze_layers must be in 1..{len(layers)}, got {n_layers!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(layers[len(layers) - n_layers :].parameters())
    for module in list(model)[1:]:
        trainable.extend(module.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable


class PrefixCache:
    """The frozen lower layers' output (float16, padding dropped) for a list of texts.

    Parameters
    ----------
    torch : module
    model : SentenceTransformer
        A ``Transformer`` module (BERT-like) first; its ``max_seq_length`` applies.
    texts : list of str
    n_layers : int
        Layers on top that will be trained (the cache stops below them).
    batch_size : int
    """

    def __init__(self, torch: Any, model: Any, texts: list[str], n_layers: int, batch_size: int = 64) -> None:
        auto, layers = _encoder_parts(model)
        self.torch = torch
        self.split = len(layers) - n_layers
        self.states: list[Any] = []
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                features = _tokenize(model, texts[start : start + batch_size])
                attention = features["attention_mask"]
                hidden = auto.embeddings(
                    input_ids=features["input_ids"], token_type_ids=features.get("token_type_ids")
                )
                hidden = _run_layers(torch, layers[: self.split], hidden, attention)
                for row, length in enumerate(attention.sum(dim=1).tolist()):
                    # right padding (BERT tokenizers): the tokens are the first `length` positions
                    self.states.append(hidden[row, :length].to(torch.float16).clone())
        model.train(was_training)

    def __len__(self) -> int:
        return len(self.states)

    def encode(self, model: Any, rows: Sequence[int]) -> Any:
        """Sentence embeddings of the cached texts ``rows`` through the top layers and the later
        modules (with gradients when the model's parameters require them)."""
        torch = self.torch
        _, layers = _encoder_parts(model)
        seqs = [self.states[r].float() for r in rows]
        lengths = torch.tensor([s.shape[0] for s in seqs])
        hidden = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        attention = (torch.arange(hidden.shape[1])[None, :] < lengths[:, None]).long()
        hidden = _run_layers(torch, layers[self.split :], hidden, attention)
        features: dict[str, Any] = {"token_embeddings": hidden, "attention_mask": attention}
        for module in list(model)[1:]:
            features = module(features)
        return features["sentence_embedding"]
