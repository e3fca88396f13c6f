"""Binary image search with CLIP (issue 17), on a tiny randomly initialised CLIP built here (no weights
can be downloaded): loading, decoding + batching, codes, text -> image and image -> image search, the CLI
and the page."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("sentence_transformers")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from quantsearch.cli import main  # noqa: E402
from quantsearch.embed import Embedder  # noqa: E402
from quantsearch.exceptions import InvalidArgumentError  # noqa: E402
from quantsearch.images import (  # noqa: E402
    decode_image,
    embed_images,
    find_images,
    index_images,
    load_image,
    thumbnail_base64,
)

pytestmark = pytest.mark.embed


def build_tiny_clip(root: Path) -> Path:
    """A randomly initialised CLIP (2-layer towers, 24-d projection) saved as a sentence-transformers
    folder, with a byte-level BPE tokenizer (no merges) and a 32-pixel image processor."""
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(0)
    hf = root / "hf"
    CLIPModel(config).save_pretrained(hf)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(hf)
    try:
        from sentence_transformers.base.modules import Transformer
    except ImportError:  # sentence-transformers < 5.4
        from sentence_transformers.models import Transformer
    SentenceTransformer(modules=[Transformer(str(hf))], device="cpu").save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip")))


def _picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A seeded picture: a coloured background with a block of another colour."""
    rng = np.random.default_rng(seed)
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:] = rng.integers(0, 256, 3)
    y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    arr[y : y + size[1] // 2, x : x + size[0] // 2] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def _photos(folder: Path, n: int = 12) -> list[Path]:
    folder.mkdir()
    (folder / "sub").mkdir()
    paths = []
    for i in range(n):
        fmt = ("PNG", "JPEG", "BMP")[i % 3]
        path = (folder / "sub" if i % 4 == 0 else folder) / f"img{i:02d}.{fmt.lower()}"
        _picture(i).save(path, format=fmt)
        paths.append(path)
    return paths


def test_find_decode_and_thumbnail(tmp_path: Path) -> None:
    paths = _photos(tmp_path / "photos")
    (tmp_path / "photos" / "notes.csv").write_text("not an image")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"")
    found = find_images(tmp_path / "photos")
    assert sorted(found) == sorted(paths)
    img = load_image(paths[1])
    assert img.mode == "RGB" and img.size == (48, 40)
    raw = io.BytesIO()
    _picture(5).save(raw, format="PNG")
    np.testing.assert_array_equal(np.asarray(decode_image(raw.getvalue())), np.asarray(_picture(5)))
    thumb = Image.open(io.BytesIO(base64.b64decode(thumbnail_base64(_picture(3, (400, 200)), 100))))
    assert thumb.format == "JPEG" and thumb.size == (100, 50)
    with pytest.raises(InvalidArgumentError, match="not a readable image"):
        decode_image(b"definitely not an image")
    with pytest.raises(InvalidArgumentError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidArgumentError, match="not a folder"):
        find_images(tmp_path / "missing")


def test_clip_embeds_texts_and_images_in_one_space(tiny_clip: str) -> None:
    emb = Embedder(tiny_clip)
    pictures = [_picture(i) for i in range(5)]
    batched = embed_images(emb, pictures, batch_size=2)
    one_by_one = np.concatenate([embed_images(emb, [p]) for p in pictures])
    assert batched.shape == (5, 24) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)  # batching changes nothing
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    # an independent reference: transformers' CLIPModel.get_image_features on the processor's pixels
    import torch
    from transformers import CLIPModel, CLIPProcessor

    hf = str(Path(tiny_clip).parent / "hf")
    model, processor = CLIPModel.from_pretrained(hf).eval(), CLIPProcessor.from_pretrained(hf)
    with torch.no_grad():
        ref = model.get_image_features(**processor(images=pictures, return_tensors="pt"))
    ref = getattr(ref, "pooler_output", ref).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(batched, ref, atol=1e-4)
    texts = emb.embed(["a red square", "blue"])
    assert texts.shape == (2, 24)
    with pytest.raises(InvalidArgumentError, match="empty"):
        embed_images(emb, [])


def test_index_images_then_text_and_image_search(tmp_path: Path, tiny_clip: str) -> None:
    paths = _photos(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = index_images(tmp_path / "photos", tmp_path / "idx", model=tiny_clip, rescore=[], batch_size=5)
    emb = Embedder(tiny_clip)
    with result.index as index:
        assert result.added == len(paths) and result.skipped == ["broken.jpg"]
        assert len(index) == len(paths)
        ids = sorted(p.relative_to(tmp_path / "photos").as_posix() for p in paths)
        vectors = embed_images(emb, [load_image(tmp_path / "photos" / i) for i in ids])
        codes = np.packbits(vectors > 0, axis=1)  # sign bits: the reference codes
        # image -> image: each picture finds itself first, and the order is the Hamming order
        for row in (0, 5):
            res = index.search(vectors[row : row + 1], k=len(ids))
            assert res.ids.shape == (1, len(ids))
            got = [h["id"] for h in res.to_list()[0]]
            assert got[0] == ids[row]
            hamming = np.bitwise_count(codes ^ codes[row]).sum(axis=1)
            assert (
                sorted(hamming[[ids.index(g) for g in got]].tolist())
                == hamming[[ids.index(g) for g in got]].tolist()
            )
        # text -> image, embedded by the index's recorded model
        res = index.search("a picture of a red block", k=3)
        q = emb.embed(["a picture of a red block"])
        hamming = np.bitwise_count(codes ^ np.packbits(q > 0, axis=1)).sum(axis=1)
        assert hamming[ids.index(res.to_list()[0][0]["id"])] == hamming.min()
        hit = index.get(ids[0])
        meta = hit["metadata"]
        assert meta["image"] is True and meta["path"] == ids[0]
        assert Image.open(io.BytesIO(base64.b64decode(meta["thumbnail"]))).format == "JPEG"
    with pytest.raises(InvalidArgumentError, match="already holds an index"):
        index_images(tmp_path / "photos", tmp_path / "idx", model=tiny_clip)
    with pytest.raises(InvalidArgumentError, match="holds no images"):
        (tmp_path / "empty").mkdir()
        index_images(tmp_path / "empty", tmp_path / "idx2", model=tiny_clip)


def test_cli_index_photos_and_search_by_text_and_image(tmp_path: Path, tiny_clip: str, capsys) -> None:
    paths = _photos(tmp_path / "photos", n=6)
    idx = str(tmp_path / "idx")
    assert main(["index", str(tmp_path / "photos"), "--index", idx, "--model", tiny_clip, "-q"]) == 0
    assert "indexed 6 images" in capsys.readouterr().out
    assert main(["search", idx, "green", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 3
    assert main(["search", idx, "--image", str(paths[2]), "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["id"] == paths[2].relative_to(tmp_path / "photos").as_posix()
    assert main(["search", idx, "--image", str(tmp_path / "nope.png")]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(["search", idx]) == 2
    assert "required" in capsys.readouterr().err


def test_page_shows_thumbnails_and_searches_by_image(tmp_path: Path, tiny_clip: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from quantsearch.server import create_app

    paths = _photos(tmp_path / "photos", n=6)
    index_images(tmp_path / "photos", tmp_path / "idx", model=tiny_clip).index.close()
    with TestClient(create_app(tmp_path / "idx"), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="image-query"' in page.text
        assert "img-src 'self' data:" in page.headers["content-security-policy"]
        script = client.get("/static/app.js").text
        assert "data:image/jpeg;base64," in script and "/search/image" in script
        hits = client.post("/search", json={"query": "a blue square", "k": 3}).json()["hits"]
        assert len(hits) == 3 and all(h["metadata"]["thumbnail"] for h in hits)
        body = paths[4].read_bytes()
        res = client.post("/search/image?k=2", content=body, headers={"Content-Type": "image/png"})
        assert res.status_code == 200, res.text
        assert res.json()["hits"][0]["id"] == paths[4].relative_to(tmp_path / "photos").as_posix()
        assert "embed" in res.json()["timings_ms"]
        bad = client.post("/search/image", content=b"nope", headers={"Content-Type": "image/png"})
        assert bad.status_code == 400 and "not a readable image" in bad.json()["error"]["message"]
