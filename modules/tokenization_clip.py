"""CLIP's byte-level BPE tokenizer (the one OpenAI trained CLIP with).

Behaviour follows OpenAI's ``simple_tokenizer``: text is cleaned (ftfy, HTML entities
unescaped twice, whitespace collapsed, lower-cased), split into words, numbers (one digit
per piece) and symbol runs, each piece is UTF-8 encoded, its bytes are mapped onto
printable characters, and BPE merges are applied in rank order. Ids agree with
``open_clip.tokenize`` (``tests/test_tokenizer.py`` checks over a thousand strings).

One deliberate echo of OpenAI: the literal strings ``<|startoftext|>`` and
``<|endoftext|>`` inside a caption are read as the special tokens (open_clip names its
specials ``<start_of_text>``/``<end_of_text>`` and would split them into characters).
"""

from __future__ import annotations

import functools
import gzip
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
VOCAB_SIZE = 49408
END_OF_WORD = "</w>"
# The merges file holds more merges than CLIP used; CLIP kept the first 48894 so that
# 256 bytes x 2 (with and without </w>) + merges + 2 specials = 49408 ids.
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2
# Cap on the word cache: a corpus has far fewer distinct words, but a stream of random
# strings must not grow memory without bound.
_CACHE_LIMIT = 1_000_000

_SPLIT_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>"
    r"|'s|'t|'re|'ve|'m|'ll|'d"
    r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def byte_to_char_table() -> dict[int, str]:
    """GPT-2's reversible byte -> character table.

    Bytes that are printable Latin-1 characters stand for themselves; the remaining 68
    bytes (controls, space, soft hyphen...) get the characters U+0100 onwards, in byte
    order, so BPE never sees whitespace or control characters.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean_text(text: str) -> str:
    """ftfy repair, double HTML unescape, whitespace collapse, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _read_merges(path: Path) -> list[tuple[str, str]]:
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    # Line 0 is a version header.
    pairs = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    bad = [i for i, p in enumerate(pairs) if len(p) != 2]
    if len(pairs) != _NUM_MERGES or bad:
        raise ValueError(
            f"BPE vocabulary {path} is damaged: expected {_NUM_MERGES} merge lines, "
            f"read {len(pairs)} ({len(bad)} malformed). Restore it from the repository."
        )
    return pairs  # type: ignore[return-value]


class SimpleTokenizer:
    """CLIP BPE tokenizer with the API CLIP4Clip's dataloaders use."""

    def __init__(self, bpe_path: str | Path = VOCAB_PATH) -> None:
        bpe_path = Path(bpe_path)
        if not bpe_path.is_file():
            raise FileNotFoundError(f"BPE vocabulary not found: {bpe_path}")
        self.byte_encoder = byte_to_char_table()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        merges = _read_merges(bpe_path)
        base = list(self.byte_encoder.values())
        tokens = base + [c + END_OF_WORD for c in base] + ["".join(m) for m in merges]
        tokens += [SOT_TOKEN, EOT_TOKEN]
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.encoder = self.vocab
        self.decoder: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self.bpe_ranks: dict[tuple[str, str], int] = {m: r for r, m in enumerate(merges)}
        self._cache: dict[str, tuple[str, ...]] = {}
        assert self.vocab[SOT_TOKEN] == SOT_ID and self.vocab[EOT_TOKEN] == EOT_ID

    # -- BPE ---------------------------------------------------------------------------
    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply merges lowest rank first; each round joins every non-overlapping
        occurrence of the chosen pair, scanning left to right."""
        ranks = self.bpe_ranks
        while len(symbols) > 1:
            pair_ranks = [ranks.get(p) for p in zip(symbols, symbols[1:], strict=False)]
            known = [r for r in pair_ranks if r is not None]
            if not known:
                break
            best = min(known)
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(pair_ranks) and pair_ranks[i] == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def bpe(self, piece: str) -> tuple[str, ...]:
        """BPE tokens of one pre-split piece (already byte-mapped); cached."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        if piece in (SOT_TOKEN, EOT_TOKEN):
            result: tuple[str, ...] = (piece,)
        else:
            symbols = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
            result = tuple(self._merge(symbols))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[piece] = result
        return result

    # -- public API ----------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """BPE token strings of ``text`` (no start/end tokens)."""
        out: list[str] = []
        for piece in _SPLIT_PATTERN.findall(clean_text(text)):
            if piece not in (SOT_TOKEN, EOT_TOKEN):
                piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            out.extend(self.bpe(piece))
        return out

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no start/end tokens)."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Inverse of ``encode`` up to cleaning; word ends become spaces."""
        chars = "".join(self.decoder[int(i)] for i in ids)
        # Special-token names are printable ASCII, so they map back to themselves.
        raw = bytes(self.byte_decoder[c] for c in chars)
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> SimpleTokenizer:
    """Process-wide tokenizer (loading the merges takes ~0.3 s)."""
    return SimpleTokenizer()


def tokenize_caption(
    tokenizer: SimpleTokenizer, text: str, max_words: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and mask as CLIP4Clip's dataloaders make them.

    ``[SOT] + tokens[: max_words - 2] + [EOT]``, padded with 0 to ``max_words``; the mask
    is 1 on real tokens. The end token is always kept, since the text tower pools there.
    """
    if max_words < 2:
        raise ValueError(f"max_words must be >= 2 (room for start and end tokens), got {max_words}")
    ids = [SOT_ID] + tokenizer.encode(text)[: max_words - 2] + [EOT_ID]
    input_ids = np.zeros(max_words, dtype=np.int64)
    input_mask = np.zeros(max_words, dtype=np.int64)
    input_ids[: len(ids)] = ids
    input_mask[: len(ids)] = 1
    return input_ids, input_mask


def clip_tokenize(texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
    """``[N, context_length]`` ids exactly as ``open_clip.tokenize`` / ``clip.tokenize``
    with truncation: too-long texts are cut and their last slot becomes EOT."""
    if isinstance(texts, str):
        texts = [texts]
    tok = get_tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [SOT_ID] + tok.encode(text) + [EOT_ID]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = EOT_ID
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
