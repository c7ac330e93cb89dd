"""modules/clip.py: parity with open_clip, OpenAI-style archives, download + checksum, bad files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from modules.clip import (
    CLIP,
    CLIPConfig,
    CLIPDownloadError,
    build_clip,
    resolve_clip_checkpoint,
)
from modules.tokenization_clip import clip_tokenize
from modules.weights import CheckpointError, load_clip_state_dict

open_clip = pytest.importorskip("open_clip")
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
]

ATOL = 1e-5
CAPTIONS = ["a man is playing guitar on stage", "a dog runs after a ball in the park", "", "fireworks " * 90]

TINY = CLIPConfig(
    embed_dim=32,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=8,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)


# ----------------------------------------------------------------------------- helpers
def _reduced_open_clip(
    embed_dim: int, image_size: int, patch: int, v_width: int, t_width: int, t_heads: int, layers: int
) -> torch.nn.Module:
    """An open_clip CLIP with a released model's widths/patch but only `layers` blocks."""
    from open_clip.model import CLIP as OpenCLIP
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=layers, width=v_width, patch_size=patch, image_size=image_size)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=t_width, heads=t_heads, layers=layers)
    return OpenCLIP(embed_dim, vision, text, quick_gelu=True)


def _compare_with_open_clip(reference: torch.nn.Module, image_size: int, n_images: int = 2,
                            captions: list[str] = CAPTIONS) -> tuple[CLIP, float, float]:
    """Load `reference`'s state dict into ours; return it and the max |diff| of image and
    text embeddings."""
    torch.manual_seed(0)
    reference.eval()
    state = reference.state_dict()
    ours = build_clip(state).eval()
    assert set(ours.state_dict()) == set(state)
    images = torch.randn(n_images, 3, image_size, image_size)
    ids = clip_tokenize(captions)
    with torch.no_grad():
        d_img = (ours.encode_image(images) - reference.encode_image(images)).abs().max().item()
        d_txt = (ours.encode_text(ids) - reference.encode_text(ids)).abs().max().item()
    return ours, d_img, d_txt


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- (a), (b) parity
def test_vit_b32_matches_open_clip() -> None:
    """Full-depth ViT-B/32. open_clip's 'ViT-B-32' differs only by nn.GELU in place of
    QuickGELU (same keys); OpenAI's weights, and ours, are 'ViT-B-32-quickgelu'."""
    quick = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    # Full depth is slow on 2 CPU cores: one image, a short and a truncated caption.
    _, d_img, d_txt = _compare_with_open_clip(quick, 224, n_images=1, captions=CAPTIONS[::3])
    assert d_img < ATOL and d_txt < ATOL, (d_img, d_txt)


@pytest.mark.parametrize(
    "shape,kwargs,image_size",
    [
        ("B/16", dict(embed_dim=512, patch=16, v_width=768, t_width=512, t_heads=8, layers=2), 224),
        ("L/14", dict(embed_dim=768, patch=14, v_width=1024, t_width=768, t_heads=12, layers=2), 224),
        ("L/14@336", dict(embed_dim=768, patch=14, v_width=1024, t_width=768, t_heads=12, layers=1), 336),
    ],
)
def test_reduced_depth_shapes_match_open_clip(shape: str, kwargs: dict, image_size: int) -> None:
    reference = _reduced_open_clip(image_size=image_size, **kwargs)
    ours, d_img, d_txt = _compare_with_open_clip(reference, image_size)
    assert ours.config.vision_patch_size == kwargs["patch"] and ours.config.image_resolution == image_size
    assert ours.config.vision_layers == kwargs["layers"] and ours.config.transformer_heads == kwargs["t_heads"]
    assert d_img < ATOL and d_txt < ATOL, (shape, d_img, d_txt)


def test_short_text_equals_padded_text() -> None:
    """CLIP4Clip feeds max_words (e.g. 32) tokens: same pooled and per-token features as 77."""
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    ids = clip_tokenize(CAPTIONS[:2])
    with torch.no_grad():
        full, hidden_full = model.encode_text(ids, return_hidden=True)
        short, hidden_short = model.encode_text(ids[:, :32], return_hidden=True)
    torch.testing.assert_close(short, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden_short, hidden_full[:, :32], atol=1e-6, rtol=0)


def test_linear_patch_3d_starts_equal_to_2d() -> None:
    """build_clip allocates on the meta device; the inflated conv2 must still be loaded, and
    at initialisation the 3D patch (conv1 in the middle slot) equals per-frame 2D patches."""
    torch.manual_seed(0)
    state = CLIP(TINY).state_dict()
    flat, temporal = build_clip(state).eval(), build_clip(state, linear_patch="3d").eval()
    frames = torch.randn(2 * 3, 3, 32, 32)  # 2 videos x 3 frames
    with torch.no_grad():
        torch.testing.assert_close(temporal.encode_image(frames, video_frame=3), flat.encode_image(frames),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="video_frame"):
        temporal.encode_image(frames)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_run_on_cpu(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    images, ids = torch.randn(2, 3, 32, 32), clip_tokenize(CAPTIONS[:2])
    with torch.no_grad():
        ref_img, ref_txt = model.encode_image(images), model.encode_text(ids)
        model = model.to(dtype)
        img, txt = model.encode_image(images), model.encode_text(ids)
    assert img.dtype == dtype and txt.dtype == dtype
    torch.testing.assert_close(img.float(), ref_img, atol=0.1, rtol=0.05)
    torch.testing.assert_close(txt.float(), ref_txt, atol=0.1, rtol=0.05)


# ----------------------------------------------------------------------------- (c) files
def _openai_style_archive(model: CLIP, path: Path) -> None:
    """What OpenAI ships: a TorchScript archive of the fp16 model, with the scalar
    metadata (input_resolution, context_length, vocab_size) stored beside the weights."""
    model = model.half().eval()
    for name in ("context_length", "vocab_size"):  # plain ints on our module; buffers in theirs
        delattr(model, name)
    model.register_buffer("input_resolution", torch.tensor(TINY.image_resolution))
    model.register_buffer("context_length", torch.tensor(TINY.context_length))
    model.register_buffer("vocab_size", torch.tensor(TINY.vocab_size))
    images = torch.randn(1, 3, TINY.image_resolution, TINY.image_resolution).half()
    with pytest.warns(Warning), torch.no_grad():
        traced = torch.jit.trace_module(model, {"encode_image": images}, check_trace=False)
    torch.jit.save(traced, str(path))


def test_torchscript_fp16_archive_loads_as_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = CLIP(TINY).eval()
    expected = {k: v.half().float() for k, v in source.state_dict().items()}
    path = tmp_path / "ViT-Tiny.pt"
    _openai_style_archive(source, path)
    raw = torch.jit.load(str(path)).state_dict()
    assert raw["visual.conv1.weight"].dtype == torch.float16 and "input_resolution" in raw
    state = load_clip_state_dict(path)
    assert set(state) == set(expected)  # metadata scalars removed
    assert all(v.dtype == torch.float32 for v in state.values())
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    model = build_clip(state)
    assert model.config == TINY and model.dtype == torch.float32


def test_plain_state_dict_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = CLIP(TINY).state_dict()
    plain = tmp_path / "plain.pt"
    torch.save({k: v.half() for k, v in state.items()}, plain)
    loaded = load_clip_state_dict(plain)
    assert all(v.dtype == torch.float32 for v in loaded.values())
    torch.testing.assert_close(loaded["ln_final.weight"], state["ln_final.weight"])
    wrapped = tmp_path / "wrapped.pt"  # DDP prefixes inside a {"state_dict": ...} container
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert set(load_clip_state_dict(wrapped)) == set(state)
    build_clip(load_clip_state_dict(wrapped))


# ----------------------------------------------------------------------------- (d) download
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def http_root(tmp_path: Path):
    """(root folder, base url) of a local HTTP server running in a thread."""
    root = tmp_path / "www"
    root.mkdir()
    _QuietHandler.requests = []
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _publish(root: Path, base: str, payload: bytes, name: str, sha: str | None = None) -> str:
    """Put `payload` where an OpenAI-style URL (<sha256>/<file>) points; return the URL."""
    sha = sha or hashlib.sha256(payload).hexdigest()
    (root / sha).mkdir(exist_ok=True)
    (root / sha / name).write_bytes(payload)
    return f"{base}/{sha}/{name}"


def test_download_checks_sha_and_caches(http_root, tmp_path: Path) -> None:
    root, base = http_root
    payload = os.urandom(300_000)
    urls = {"ViT-Test/1": _publish(root, base, payload, "vit-test-dl.pt")}
    cache = tmp_path / "cache"
    path = resolve_clip_checkpoint("ViT-Test/1", cache_dir=cache, urls=urls)
    assert path == cache / "vit-test-dl.pt" and path.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == ["vit-test-dl.pt"]
    assert len(_QuietHandler.requests) == 1
    assert resolve_clip_checkpoint("ViT-Test/1", cache_dir=cache, urls=urls) == path
    assert len(_QuietHandler.requests) == 1  # second call served from the cache
    path.write_bytes(b"damaged")  # a bad cached copy is fetched again
    assert resolve_clip_checkpoint("ViT-Test/1", cache_dir=cache, urls=urls).read_bytes() == payload
    assert len(_QuietHandler.requests) == 2


def test_download_with_wrong_sha_leaves_nothing(http_root, tmp_path: Path) -> None:
    root, base = http_root
    wrong = "0" * 64
    urls = {"ViT-Test/2": _publish(root, base, b"not what was promised", "vit-test-bad.pt", sha=wrong)}
    cache = tmp_path / "cache"
    with pytest.raises(CLIPDownloadError, match="SHA-256"):
        resolve_clip_checkpoint("ViT-Test/2", cache_dir=cache, urls=urls)
    assert list(cache.iterdir()) == []  # no partial or temporary file


def test_offline_names_file_and_folder(tmp_path: Path) -> None:
    sha = "1" * 64
    urls = {"ViT-Test/3": f"http://127.0.0.1:1/{sha}/vit-test-offline.pt"}
    cache = tmp_path / "cache"
    with pytest.raises(CLIPDownloadError) as info:
        resolve_clip_checkpoint("ViT-Test/3", cache_dir=cache, urls=urls)
    message = str(info.value)
    assert "vit-test-offline.pt" in message and str(cache) in message and sha in message
    assert not any(cache.iterdir())


def test_resolve_existing_path_and_unknown_name(tmp_path: Path) -> None:
    local = tmp_path / "mine.pt"
    local.write_bytes(b"x")
    assert resolve_clip_checkpoint(str(local)) == local
    with pytest.raises(FileNotFoundError, match="ViT-Nope"):
        resolve_clip_checkpoint("ViT-Nope", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- (e) bad input
def test_mismatched_state_dict_lists_every_problem() -> None:
    torch.manual_seed(0)
    state = dict(CLIP(TINY).state_dict())
    del state["visual.transformer.resblocks.0.ln_1.bias"]
    state["visual.extra_head.weight"] = torch.zeros(3)
    state["visual.ln_pre.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        build_clip(state, source="my.pt")
    message = str(info.value)
    assert "my.pt" in message
    assert "1 missing keys: visual.transformer.resblocks.0.ln_1.bias" in message
    assert "1 unexpected keys: visual.extra_head.weight" in message
    assert "visual.ln_pre.weight: checkpoint (7,) vs model (64,)" in message


def test_non_clip_state_dict_is_named() -> None:
    with pytest.raises(CheckpointError, match="visual.proj"):
        build_clip({"foo": torch.zeros(1)})
    state = dict(CLIP(TINY).state_dict())
    del state["token_embedding.weight"]
    with pytest.raises(CheckpointError, match="token_embedding.weight"):
        build_clip(state)


@pytest.mark.parametrize(
    "name,content",
    [
        ("random.pt", os.urandom(4096)),
        ("notes.txt", b"this is a README, not a checkpoint\n"),
        ("empty.pt", b""),
        ("truncated_zip.pt", None),
    ],
)
def test_corrupt_files_are_named(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:
        torch.save(CLIP(TINY).state_dict(), path)
        path.write_bytes(path.read_bytes()[:-2000])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=name):
        load_clip_state_dict(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_clip_state_dict(tmp_path / "absent.pt")


class _Payload:
    """Unpickling this would create a folder: the attack weights_only=True must stop."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (str(self.target),))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"visual.proj": _Payload(marker)}, evil)  # zip container, like a real checkpoint
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_clip_state_dict(evil)
    assert not marker.exists()
    import pickle

    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="evil_legacy.pt"):
        load_clip_state_dict(legacy)
    assert not marker.exists()


def test_non_tensor_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weird.pt"
    torch.save({"visual.proj": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match="weird.pt"):
        load_clip_state_dict(path)
