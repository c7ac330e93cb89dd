"""CLIP BPE tokenizer: vocabulary integrity, parity with open_clip, CLIP4Clip caption ids."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch

from modules.tokenization_clip import (
    EOT_ID,
    EOT_TOKEN,
    SOT_ID,
    SOT_TOKEN,
    VOCAB_PATH,
    SimpleTokenizer,
    clip_tokenize,
    get_tokenizer,
    tokenize_caption,
)

VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
N_PARITY_STRINGS = 1200

# Pools the generator draws from; each covers something the cleaning or BPE must get right.
_WORDS = (
    "a man is playing guitar on stage while the crowd cheers loudly "
    "woman cooking pasta kitchen dog runs after ball in park child "
    "gymnastics fireworks exploding night sky basketball slam dunk "
    "cartoon characters talking about something unbelievable"
).split()
_POOLS = {
    "accents": ["café", "naïve", "Ångström", "São", "Paulo", "façade", "Žižek", "ĳssel", "Straße", "ﬁne"],
    "cjk": ["日本語", "中文字幕", "한국어", "東京タワー", "カタカナ", "漢字"],
    "scripts": ["مرحبا", "שלום", "नमस्ते", "Привет", "Ελληνικά", "ภาษาไทย", "ሰላም"],
    "emoji": ["😀", "🎸", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "✨✨", "🤖"],
    "punct": [
        "!", "?!", "...", ",", ";", "--", "—", "“quoted”", "'", "\"", "(", ")", "[x]", "#tag", "@user", "$5",
        "%", "&", "*", "~", "^_^", ":-)",
    ],
    "numbers": ["0", "7", "42", "2024", "3.14159", "1,000,000", "½", "Ⅻ", "٣", "１２３", "10th", "v2.0"],
    "entities": [
        "&amp;", "&lt;b&gt;", "&quot;hi&quot;", "&#39;", "&#x27;", "&amp;amp;", "&nbsp;", "&eacute;",
        "&#128512;", "&#28;", "&#150;", "&copy;",
    ],
    "mojibake": ["cafÃ©", "Ã¼ber", "â€œniceâ€\x9d", "donâ€™t", "SchrÃ¶dinger"],
    "contractions": ["it's", "IT'S", "We'RE", "they've", "I'm", "you'll", "he'd", "don't", "o'clock", "rock'n'roll"],
    "spaces": [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\x0b", "\x0c", "\u2028", "\u200b", "\x1c", "\x85"],
    "odd": [
        "\u0301", "e\u0301", "\ufeff", "\x00", "\x7f", "\u00ad", "ﬀ", "Ⓐ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "A\u0308", "ß",
        "İstanbul", "ΣΑΣ",
    ],
}
_FIXED = [
    "",
    " ",
    "\t\n  \r",
    "a",
    "A",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "supercalifragilisticexpialidocious" * 5,
    "1234567890" * 12,
    "&amp;amp;amp;",
    "<b>bold</b> <i>italic</i>",
    "http://example.com/path?q=1&x=2",
    "user@example.com",
    "C++ vs. C# (and F#)",
    "MiXeD CaSe SeNtEnCe",
]


def _random_piece(rng: random.Random) -> str:
    kind = rng.choice(["word"] * 6 + list(_POOLS))
    if kind == "word":
        word = rng.choice(_WORDS)
        return word.upper() if rng.random() < 0.1 else word.capitalize() if rng.random() < 0.2 else word
    return rng.choice(_POOLS[kind])


def _random_string(rng: random.Random) -> str:
    # Mostly caption-length; every 10th string is long enough to need truncation.
    n = rng.randint(60, 160) if rng.random() < 0.1 else rng.randint(1, 20)
    glue = lambda: rng.choice([" "] * 8 + ["", "  ", "\t", "\n", "-", "/"])  # noqa: E731
    return "".join(_random_piece(rng) + glue() for _ in range(n))


def parity_strings() -> list[str]:
    """Deterministic test strings: fixed edge cases, then seeded random mixtures."""
    rng = random.Random(20261128)
    strings = list(_FIXED)
    strings += [rng.choice(p) for p in _POOLS.values() for _ in range(3)]
    while len(strings) < N_PARITY_STRINGS:
        strings.append(_random_string(rng))
    return strings


@pytest.fixture(scope="module")
def tok() -> SimpleTokenizer:
    return get_tokenizer()


def test_vocab_sha256() -> None:
    assert hashlib.sha256(VOCAB_PATH.read_bytes()).hexdigest() == VOCAB_SHA256


def test_special_ids_and_vocab_size(tok: SimpleTokenizer) -> None:
    assert SOT_ID == 49406 and EOT_ID == 49407
    assert tok.vocab[SOT_TOKEN] == SOT_ID and tok.vocab[EOT_TOKEN] == EOT_ID
    assert len(tok.vocab) == 49408
    assert tok.convert_tokens_to_ids([SOT_TOKEN, "a</w>", EOT_TOKEN]) == [SOT_ID, 320, EOT_ID]


def test_get_tokenizer_is_cached() -> None:
    assert get_tokenizer() is get_tokenizer()


@pytest.mark.parametrize(
    "text,ids",
    [
        ("a person is connecting something to system", [320, 2533, 533, 41429, 2006, 531, 2422]),
        ("a little girl does gymnastics", [320, 1274, 1611, 1897, 20116]),
        ("Fireworks are being lit and exploding in a night sky!",
         [10641, 631, 1265, 4350, 537, 34683, 530, 320, 930, 2390, 256]),
        ("a man's car, 2 dogs", [320, 786, 568, 1615, 267, 273, 3255]),
    ],
)
def test_golden_ids(tok: SimpleTokenizer, text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids


def test_ids_equal_open_clip_on_1200_strings() -> None:
    """clip_tokenize == open_clip.tokenize on all 1200 generated strings (agreement 1200/1200)."""
    open_clip = pytest.importorskip("open_clip")
    strings = parity_strings()
    assert len(strings) == N_PARITY_STRINGS
    ours = clip_tokenize(strings)
    theirs = open_clip.tokenize(strings)
    agree = (ours == theirs).all(dim=1)
    bad = [repr(strings[i]) for i in torch.nonzero(~agree).flatten().tolist()]
    assert int(agree.sum()) == N_PARITY_STRINGS, f"{len(bad)} disagreements, e.g. {bad[:5]}"
    # The set must actually exercise truncation and the empty case.
    assert (ours[:, -1] == EOT_ID).sum() > 50
    assert ours[0, :3].tolist() == [SOT_ID, EOT_ID, 0]


def test_clip_tokenize_shape_and_truncation() -> None:
    out = clip_tokenize(["word " * 200, "hi"], context_length=16)
    assert out.shape == (2, 16) and out.dtype == torch.long
    assert out[0, 0] == SOT_ID and out[0, -1] == EOT_ID and (out[0] != 0).all()
    assert out[1].tolist()[:3] == [SOT_ID, 1883, EOT_ID] and (out[1, 3:] == 0).all()
    assert clip_tokenize("hi").shape == (1, 77)


def test_tokenize_returns_bpe_strings(tok: SimpleTokenizer) -> None:
    assert tok.tokenize("Hello, World!") == ["hello</w>", ",</w>", "world</w>", "!</w>"]
    assert tok.convert_tokens_to_ids(tok.tokenize("Hello, World!")) == tok.encode("Hello, World!")


def test_tokenize_caption_short(tok: SimpleTokenizer) -> None:
    ids, mask = tokenize_caption(tok, "a little girl does gymnastics", max_words=10)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [SOT_ID, 320, 1274, 1611, 1897, 20116, EOT_ID, 0, 0, 0]
    assert mask.tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]


def test_tokenize_caption_truncates_keeping_eot(tok: SimpleTokenizer) -> None:
    text = "a person is connecting something to system"  # 7 tokens
    ids, mask = tokenize_caption(tok, text, max_words=6)
    assert ids.tolist() == [SOT_ID, 320, 2533, 533, 41429, EOT_ID]
    assert mask.tolist() == [1] * 6
    ids, mask = tokenize_caption(tok, text, max_words=9)  # exact fit
    assert ids.tolist() == [SOT_ID, 320, 2533, 533, 41429, 2006, 531, 2422, EOT_ID]
    ids, mask = tokenize_caption(tok, "", max_words=4)
    assert ids.tolist() == [SOT_ID, EOT_ID, 0, 0] and mask.tolist() == [1, 1, 0, 0]


def test_tokenize_caption_matches_clip_tokenize_when_long(tok: SimpleTokenizer) -> None:
    text = " ".join(_WORDS * 3)
    ids, mask = tokenize_caption(tok, text, max_words=32)
    assert ids.tolist() == clip_tokenize(text, context_length=32)[0].tolist()
    assert mask.sum() == 32


def test_tokenize_caption_rejects_tiny_max_words(tok: SimpleTokenizer) -> None:
    with pytest.raises(ValueError, match="max_words"):
        tokenize_caption(tok, "hi", max_words=1)


@pytest.mark.parametrize(
    "text", ["a man is playing guitar", "hello world 123", "x-ray, c.d. and e/f?", "it's a dog's life"]
)
def test_decode_round_trip_ascii(tok: SimpleTokenizer, text: str) -> None:
    decoded = tok.decode(tok.encode(text))
    # Decoding yields the pre-split pieces each followed by a space.
    assert decoded.split() == [p.strip() for p in decoded.split()]
    assert tok.encode(decoded) == tok.encode(text)
    assert decoded.replace(" ", "") == text.replace(" ", "")


def test_decode_non_ascii_and_specials(tok: SimpleTokenizer) -> None:
    assert tok.decode(tok.encode("café 日本語 😀")) == "café 日本語 😀 "
    assert tok.decode([SOT_ID, 320, EOT_ID]) == "<|startoftext|>a <|endoftext|>"


def test_literal_special_strings_are_specials_as_in_openai(tok: SimpleTokenizer) -> None:
    # OpenAI's tokenizer (used by CLIP4Clip) maps these literals to the special ids.
    assert tok.encode("a <|endoftext|> b") == [320, EOT_ID, 321]


def test_html_and_whitespace_cleaning(tok: SimpleTokenizer) -> None:
    assert tok.encode("Tom &amp;amp; Jerry") == tok.encode("tom & jerry")
    assert tok.encode("  a\t\nman\u3000runs  ") == tok.encode("a man runs")
    assert tok.encode("cafÃ©") == tok.encode("café")  # ftfy repairs mojibake


def test_bad_vocab_file_is_reported(tmp_path) -> None:
    stub = tmp_path / "bpe.txt.gz"
    import gzip

    stub.write_bytes(gzip.compress(b"#version: 0.2\ni n\n"))
    with pytest.raises(ValueError, match="damaged"):
        SimpleTokenizer(stub)
    with pytest.raises(FileNotFoundError, match="missing.gz"):
        SimpleTokenizer(tmp_path / "missing.gz")
