"""ViLBERTConfig: the architecture of a ViLBERT (or single-stream) model.

The fields mirror the released JSON format of the original code (``BertConfig``), so
``from_original_json`` / ``to_original_json`` are a plain rename. Implementation choices that
the original JSON does not hold (compute dtype, rematerialisation, attention kernel) are
separate fields with defaults that reproduce the original numerics.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax.numpy as jnp

# Keys of the released JSON that the original forward pass never reads. They are accepted on
# input and written back with their released values so the original code can read our JSON.
_UNUSED_ORIGINAL_KEYS = {
    "bi_intermediate_size": 1024,
    "bi_attention_type": 1,
    "v_initializer_range": 0.02,
    "pooling_method": "mul",
}
_DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("auto", "explicit", "cudnn")
NUM_TASK_TOKENS = 20  # Rows of the 12-in-1 task-token table (original task ids 1..19 + row 0).


@dataclasses.dataclass(frozen=True)
class ViLBERTConfig:
  """Architecture of a two-stream ViLBERT or of the paper's single-stream baseline.

  Widths are in features; the text stream is BERT (``hidden_size`` wide), the visual stream
  ``v_hidden_size`` wide, and co-attention projects both to ``bi_hidden_size``.
  """

  # --- text stream (BERT) ---
  vocab_size: int = 30522  # WordPiece vocabulary size.
  hidden_size: int = 768  # Text width d_t.
  num_hidden_layers: int = 12  # Text TRM layers.
  num_attention_heads: int = 12  # Text self-attention heads.
  intermediate_size: int = 3072  # Text FFN width (also inside co-attention layers).
  max_position_embeddings: int = 512  # Longest text sequence.
  type_vocab_size: int = 2  # Token-type (segment) ids.
  hidden_dropout_prob: float = 0.1  # Text hidden dropout; also pooled/alignment dropout.
  attention_probs_dropout_prob: float = 0.1  # Text attention-probability dropout.
  # --- visual stream ---
  v_feature_size: int = 2048  # Region feature width (detector pool5).
  v_target_size: int = 1601  # Detector classes incl. background (masked-region target).
  v_hidden_size: int = 1024  # Visual width d_v.
  v_num_hidden_layers: int = 6  # Visual TRM layers.
  v_num_attention_heads: int = 8  # Visual self-attention heads.
  v_intermediate_size: int = 1024  # Visual FFN width (no 4x expansion in the original).
  v_hidden_dropout_prob: float = 0.1  # Visual hidden dropout.
  v_attention_probs_dropout_prob: float = 0.1  # Visual attention-probability dropout.
  # --- co-attention ---
  bi_hidden_size: int = 1024  # Co-attention Q/K/V width d_b; also the pooler width.
  bi_num_attention_heads: int = 8  # Co-attention heads.
  v_biattention_id: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # Co-attn i runs before visual layer id[i].
  t_biattention_id: tuple[int, ...] = (6, 7, 8, 9, 10, 11)  # Co-attn i runs before text layer id[i].
  # --- shared ---
  initializer_range: float = 0.02  # Std of the normal init of every Dense/Embed weight.
  layer_norm_eps: float = 1e-12  # Epsilon of every LayerNorm.
  single_stream: bool = False  # True: the paper's single-stream baseline (one BERT, no v_/bi_).
  # 12-in-1: a table of NUM_TASK_TOKENS learned rows at the text width; the model takes
  # ``task_ids [B]`` and inserts the task's row right after [CLS] (the text stream has T+1
  # positions). The original JSON's ``task_specific_tokens``.
  task_specific_tokens: bool = False
  # --- implementation (not part of the original JSON) ---
  dtype: str = "float32"  # Compute dtype of matmuls; LayerNorm and softmax stay float32.
  param_dtype: str = "float32"  # Storage dtype of parameters.
  remat: bool = False  # Rematerialise every TRM / Co-TRM block in the backward pass.
  # "auto": fused jax.nn.dot_product_attention whenever it is exact (no attention-probability
  # dropout active, no maps requested), else the explicit softmax path. "explicit": always the
  # explicit path. "cudnn": fused cuDNN kernel (GPU); requires zero attention-probability dropout.
  attention_impl: str = "auto"
  # Inputs of every matmul are cast to this dtype and the products accumulated in float32
  # (forward and backward); everything else stays float32. Only with dtype="float32":
  # "bfloat16" is the fast CPU option (AMX / AVX512-BF16), "float32" the exact path.
  matmul_dtype: str = "float32"

  def __post_init__(self):
    # Lists from JSON become tuples so the config stays hashable (it is a jit static arg).
    object.__setattr__(self, "v_biattention_id", tuple(int(i) for i in self.v_biattention_id))
    object.__setattr__(self, "t_biattention_id", tuple(int(i) for i in self.t_biattention_id))
    self.validate()

  # ------------------------------------------------------------------ validation
  def validate(self) -> None:
    """Raises ValueError naming the offending field when the configuration is inconsistent."""
    def need(cond: bool, msg: str):
      if not cond:
        raise ValueError(f"ViLBERTConfig: {msg}")

    for name in ("dtype", "param_dtype"):
      need(getattr(self, name) in _DTYPES,
           f"{name}={getattr(self, name)!r} is not one of {_DTYPES}")
    need(self.matmul_dtype in _DTYPES,
         f"matmul_dtype={self.matmul_dtype!r} is not one of {_DTYPES}")
    need(self.dtype == "float32" or self.matmul_dtype == "float32",
         f"matmul_dtype={self.matmul_dtype!r} applies to dtype='float32' only (with "
         f"dtype={self.dtype!r} the matmuls already take {self.dtype} inputs)")
    need(self.attention_impl in ATTENTION_IMPLS,
         f"attention_impl={self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    need(self.hidden_size % self.num_attention_heads == 0,
         f"hidden_size={self.hidden_size} is not divisible by "
         f"num_attention_heads={self.num_attention_heads}")
    if self.attention_impl == "cudnn":
      need(self.attention_probs_dropout_prob == 0 and
           (self.single_stream or self.v_attention_probs_dropout_prob == 0),
           "attention_impl='cudnn' has no attention-probability dropout: set "
           "attention_probs_dropout_prob=0 and v_attention_probs_dropout_prob=0")
    if self.single_stream:
      need(not self.task_specific_tokens,
           "task_specific_tokens belongs to the two-stream 12-in-1 model, not single_stream")
      return
    need(self.v_hidden_size % self.v_num_attention_heads == 0,
         f"v_hidden_size={self.v_hidden_size} is not divisible by "
         f"v_num_attention_heads={self.v_num_attention_heads}")
    need(self.bi_hidden_size % self.bi_num_attention_heads == 0,
         f"bi_hidden_size={self.bi_hidden_size} is not divisible by "
         f"bi_num_attention_heads={self.bi_num_attention_heads}")
    need(len(self.v_biattention_id) == len(self.t_biattention_id),
         f"v_biattention_id {list(self.v_biattention_id)} and t_biattention_id "
         f"{list(self.t_biattention_id)} must have the same length (one entry per co-attention "
         "layer)")
    for ids, n, name in ((self.v_biattention_id, self.v_num_hidden_layers, "v_biattention_id"),
                         (self.t_biattention_id, self.num_hidden_layers, "t_biattention_id")):
      need(all(0 <= i <= n for i in ids),
           f"{name}={list(ids)} must lie in [0, {n}] (the stream's layer count)")
      need(list(ids) == sorted(ids), f"{name}={list(ids)} must be non-decreasing")

  # ------------------------------------------------------------------ derived
  @property
  def num_coattention_layers(self) -> int:
    return 0 if self.single_stream else len(self.v_biattention_id)

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def mixed_matmul(self) -> bool:
    """True when matmuls take ``matmul_dtype`` inputs and accumulate in float32."""
    return self.matmul_dtype != "float32"

  @property
  def parameter_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def pooled_size(self) -> int:
    """Width of the fused pooled vector the alignment and task heads read."""
    return self.hidden_size if self.single_stream else self.bi_hidden_size

  def replace(self, **changes: Any) -> "ViLBERTConfig":
    return dataclasses.replace(self, **changes)

  # ------------------------------------------------------------------ original JSON
  @classmethod
  def from_original_json(cls, path_or_dict: str | os.PathLike | Mapping[str, Any],
                         **overrides: Any) -> "ViLBERTConfig":
    """Reads the released JSON format (a path or an already parsed dict).

    A JSON without any ``v_*``/``bi_*`` key is the single-stream baseline's BERT config.
    Unknown keys raise, so a typo cannot silently fall back to a default.
    """
    if isinstance(path_or_dict, Mapping):
      raw = dict(path_or_dict)
    else:
      with open(path_or_dict) as f:
        raw = json.load(f)
    for act_key in ("hidden_act", "v_hidden_act"):
      act = raw.pop(act_key, "gelu")
      if act != "gelu":
        raise ValueError(f"{act_key}={act!r}: only the exact (erf) 'gelu' of the released "
                         "models is implemented")
    for key in _UNUSED_ORIGINAL_KEYS:
      raw.pop(key, None)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
      raise ValueError(f"unknown key(s) in original ViLBERT JSON: {unknown}")
    if not any(k.startswith(("v_", "bi_")) for k in raw):
      raw.setdefault("single_stream", True)
    raw.update(overrides)
    return cls(**raw)

  def to_original_json(self) -> dict[str, Any]:
    """The released JSON format (a dict; ``json.dump`` it), readable by the original code."""
    text_keys = ("attention_probs_dropout_prob", "hidden_dropout_prob", "hidden_size",
                 "initializer_range", "intermediate_size", "max_position_embeddings",
                 "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size")
    out: dict[str, Any] = {k: getattr(self, k) for k in text_keys}
    out["hidden_act"] = "gelu"
    if self.layer_norm_eps != 1e-12:
      out["layer_norm_eps"] = self.layer_norm_eps
    if self.task_specific_tokens:
      out["task_specific_tokens"] = True
    if self.single_stream:
      out.update(single_stream=True, v_feature_size=self.v_feature_size,
                 v_target_size=self.v_target_size)
      return out
    for f in dataclasses.fields(self):
      if f.name.startswith(("v_", "bi_")) or f.name == "t_biattention_id":
        value = getattr(self, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out["v_hidden_act"] = "gelu"
    out.update(_UNUSED_ORIGINAL_KEYS, bi_intermediate_size=self.bi_hidden_size,
               v_initializer_range=self.initializer_range)
    return out


# ---------------------------------------------------------------------- presets
def _coattention_depth(n: int) -> ViLBERTConfig:
  """The paper's depth ablation (Table 2): n co-attention layers, n visual TRM layers."""
  return ViLBERTConfig(v_num_hidden_layers=n, v_biattention_id=tuple(range(n)),
                       t_biattention_id=tuple(range(12 - n, 12)))


PRESETS = {
    "base": lambda: ViLBERTConfig(),  # the paper's main model (6 co-attention layers)
    "coattn2": lambda: _coattention_depth(2),
    "coattn4": lambda: _coattention_depth(4),
    "coattn6": lambda: _coattention_depth(6),
    "coattn8": lambda: _coattention_depth(8),
    "bert_large": lambda: ViLBERTConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        t_biattention_id=tuple(range(18, 24))),
    "single_stream": lambda: ViLBERTConfig(single_stream=True),
    # Tests and CPU demos: every width distinct so a transposed kernel cannot go unnoticed.
    "tiny": lambda: ViLBERTConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=40, v_feature_size=32, v_target_size=17,
        v_hidden_size=48, v_num_hidden_layers=2, v_num_attention_heads=4,
        v_intermediate_size=56, bi_hidden_size=32, bi_num_attention_heads=4,
        v_biattention_id=(0, 1), t_biattention_id=(2, 3)),
}


def preset(name: str, **overrides: Any) -> ViLBERTConfig:
  """A named configuration (see ``PRESETS``) with optional field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown ViLBERT preset {name!r}; choose from {sorted(PRESETS)}")
  return PRESETS[name]().replace(**overrides)
