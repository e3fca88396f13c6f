"""Images: find, decode, thumbnail and embed them with a CLIP model, and index a folder of images.

CLIP puts texts and images in one space, so one binary index of image embeddings answers text
queries (embedded by the same model's text tower, which is what :class:`~quantsearch.embed.Embedder`
does for a CLIP model) and image queries (:func:`embed_images`). Any sentence-transformers CLIP model
works, by hub name (``clip-ViT-B-32``) or local folder. Pillow and the model are imported lazily
(extra ``images``).

An image index is an ordinary index: id and text are the image's path relative to the folder, and
the metadata holds ``{"path", "image": true, "width", "height", "thumbnail"}``, the thumbnail a
base64 JPEG (at most :data:`THUMBNAIL_SIZE` pixels a side) that the web page shows.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .exceptions import EmptyInputError, InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "IMAGE_SUFFIXES",
    "THUMBNAIL_SIZE",
    "ImageFolderResult",
    "decode_image",
    "embed_images",
    "find_images",
    "index_images",
    "load_image",
    "thumbnail_base64",
]

logger = logging.getLogger(__name__)

#: Model used for an image folder when none is named (needs its weights: the hub or a local copy).
DEFAULT_IMAGE_MODEL = "clip-ViT-B-32"
#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
#: Longest side of the stored thumbnails, in pixels.
THUMBNAIL_SIZE = 160
_INSTALL_HINT = 'pip install "quantsearch[images]"'


def _pil() -> Any:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError(f"reading images needs Pillow: {_INSTALL_HINT}") from exc
    return Image, UnidentifiedImageError


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted by relative path; hidden entries skipped).

    Raises
    ------
    InvalidArgumentError
        If ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidArgumentError(f"{root} is not a folder")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def decode_image(data: bytes, what: str = "image") -> Image:
    """Decode encoded image bytes (JPEG, PNG, ...) into an RGB PIL image.

    Raises
    ------
    InvalidArgumentError
        If the bytes are not an image Pillow can decode (``what`` names it in the message).
    """
    image_mod, unidentified = _pil()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"{what} must be bytes, got {type(data).__name__}")
    if not data:
        raise InvalidArgumentError(f"{what} is empty")
    try:
        with image_mod.open(io.BytesIO(bytes(data))) as img:
            img.load()
            return img.convert("RGB")
    except (unidentified, OSError, ValueError, SyntaxError) as exc:
        raise InvalidArgumentError(f"{what} is not a readable image: {exc}") from None


def load_image(path: str | os.PathLike[str]) -> Image:
    """Read and decode one image file into RGB.

    Raises
    ------
    InvalidArgumentError
        Missing file, or not a readable image.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"image not found: {p}")
    return decode_image(p.read_bytes(), str(p))


def thumbnail_base64(image: Image, size: int = THUMBNAIL_SIZE) -> str:
    """A JPEG thumbnail of ``image`` (longest side ``size`` pixels at most), base64-encoded."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def embed_images(embedder: Any, images: Sequence[Image], *, batch_size: int = 32) -> np.ndarray:
    """Embed decoded images with a CLIP model.

    Parameters
    ----------
    embedder : Embedder
        An :class:`~quantsearch.embed.Embedder` over a sentence-transformers CLIP model (its
        ``normalize`` setting is applied).
    images : sequence of PIL images
    batch_size : int, default 32
        Images per forward pass.

    Returns
    -------
    ndarray of shape (len(images), dim), float32
    """
    if not images:
        raise EmptyInputError("images is empty: expected at least one image to embed")
    model = embedder.model
    try:
        out = model.encode(
            list(images),
            batch_size=batch_size,
            show_progress_bar=False,
            normalize_embeddings=embedder.normalize,
            convert_to_numpy=True,
        )
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a text-only model given images
        raise InvalidArgumentError(
            f"model {embedder.name!r} cannot embed images (is it a CLIP model?): {exc}"
        ) from exc
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class ImageFolderResult:
    """What :func:`index_images` did."""

    index: Any
    added: int
    skipped: list[str] = field(default_factory=list)


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def index_images(
    folder: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    rescore: Sequence[str] = ("int8",),
    candidates: Any = None,
    batch_size: int = 256,
    progress: Any = None,
) -> ImageFolderResult:
    """Embed every image under ``folder`` with a CLIP model and index them in a new index.

    Parameters
    ----------
    folder : path-like
        Folder of images (see :data:`IMAGE_SUFFIXES`); files that do not decode are skipped and
        listed in the result.
    index_dir : path-like
        A new index directory (it must not hold an index yet).
    model : str, optional
        sentence-transformers CLIP model name or folder (default :data:`DEFAULT_IMAGE_MODEL`).
    rescore : sequence of str
        Rescoring tiers, as for ``Index.create``.
    candidates : Quantizer or str, optional
        Candidate (RAM) tier; sign bits by default.
    batch_size : int
        Images decoded, embedded and added per step (one atomic add each).
    progress : object with ``update(n)``, optional

    Returns
    -------
    ImageFolderResult
    """
    from .embed import Embedder
    from .index import Index

    root = Path(folder)
    paths = find_images(root)
    if not paths:
        raise InvalidArgumentError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    index_path = Path(index_dir)
    if (index_path / "manifest.json").is_file():
        raise InvalidArgumentError(f"{index_path} already holds an index: image folders go into a new one")
    embedder = Embedder(model or DEFAULT_IMAGE_MODEL)
    vectors: list[np.ndarray] = []
    ids: list[str] = []
    metadata: list[dict[str, Any]] = []
    skipped: list[str] = []
    for chunk in _chunks(paths, batch_size):
        images = []
        for path in chunk:
            rel = path.relative_to(root).as_posix()
            try:
                image = load_image(path)
            except InvalidArgumentError as exc:
                logger.warning("skipping %s", exc)
                skipped.append(rel)
                continue
            images.append(image)
            ids.append(rel)
            metadata.append(
                {
                    "path": rel,
                    "image": True,
                    "width": image.width,
                    "height": image.height,
                    "thumbnail": thumbnail_base64(image),
                }
            )
        if images:
            vectors.append(embed_images(embedder, images))
        if progress is not None:
            progress.update(len(chunk))
    if not ids:
        raise InvalidArgumentError(f"none of the {len(paths)} image files under {root} could be read")
    all_vectors = np.concatenate(vectors)
    index = Index.create(
        index_path,
        all_vectors.shape[1],
        rescore=list(rescore),
        binary=candidates,
        id_type="str",
        model=embedder.name,
    )
    try:
        index.calibrate(all_vectors)
        for start in range(0, len(ids), batch_size):
            end = min(len(ids), start + batch_size)
            index.add(
                all_vectors[start:end], ids=ids[start:end], texts=ids[start:end], metadata=metadata[start:end]
            )
    except BaseException:
        index.close()
        raise
    index.embedder = embedder
    return ImageFolderResult(index, len(ids), skipped)
