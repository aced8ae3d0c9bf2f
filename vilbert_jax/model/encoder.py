"""The two-stream encoder: TRM layers of each stream interleaved with Co-TRM layers.

The interleaving follows ``v_biattention_id`` / ``t_biattention_id`` exactly as the original:
for co-attention layer i, run the visual layers ``[v_start, v_id[i])`` and the text layers
``[t_start, t_id[i])``, then the co-attention layer; after the last one, the remaining layers.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax

from vilbert_jax.config import ViLBERTConfig
from vilbert_jax.model.co_trm import CoAttentionLayer
from vilbert_jax.model.streams import text_stream, visual_stream
from vilbert_jax.model.trm import TransformerLayer
from vilbert_jax.sharding import constrain_activations

INTERMEDIATES = "intermediates"  # Collection that receives every block's output (traces).

Op = tuple[Literal["text", "visual", "coattention"], int]


def schedule(cfg: ViLBERTConfig) -> list[Op]:
  """The execution order of the blocks, e.g. ``[("text", 0), ..., ("coattention", 0), ...]``."""
  ops: list[Op] = []
  v_start = t_start = 0
  for i, (v_id, t_id) in enumerate(zip(cfg.v_biattention_id, cfg.t_biattention_id)):
    ops += [("visual", j) for j in range(v_start, v_id)]
    ops += [("text", j) for j in range(t_start, t_id)]
    ops.append(("coattention", i))
    v_start, t_start = v_id, t_id
  ops += [("visual", j) for j in range(v_start, cfg.v_num_hidden_layers)]
  ops += [("text", j) for j in range(t_start, cfg.num_hidden_layers)]
  return ops


def maybe_remat(cls: type[nn.Module], enabled: bool) -> type[nn.Module]:
  """``cls`` rematerialised in the backward pass when enabled (``deterministic`` is static)."""
  if not enabled:
    return cls
  # Positional layout (self, *arrays, deterministic): the last argument is static.
  n_args = {TransformerLayer: 3, CoAttentionLayer: 5}[cls]
  return nn.remat(cls, static_argnums=(n_args,))


class TwoStreamEncoder(nn.Module):
  """Runs ``schedule(cfg)``; apply with ``mutable=[INTERMEDIATES]`` to collect block outputs.

  The text layers before the first co-attention layer do not depend on the image:
  ``text_prefix`` runs only them, and ``__call__(..., text_prefix_done=True)`` continues from
  its result, so retrieval can encode each caption once and score it against many images.
  """

  cfg: ViLBERTConfig  # Model configuration.

  def setup(self):
    cfg = self.cfg
    trm = maybe_remat(TransformerLayer, cfg.remat)
    coattention = maybe_remat(CoAttentionLayer, cfg.remat)
    self.text_layers = [trm(cfg, text_stream(cfg)) for _ in range(cfg.num_hidden_layers)]
    self.visual_layers = [trm(cfg, visual_stream(cfg)) for _ in range(cfg.v_num_hidden_layers)]
    self.coattention_layers = [coattention(cfg) for _ in range(cfg.num_coattention_layers)]

  def _text_layer(self, i: int, text: jax.Array, mask: jax.Array,
                  deterministic: bool) -> jax.Array:
    text = constrain_activations(self.text_layers[i](text, mask, deterministic))
    self.sow(INTERMEDIATES, f"text_layer_{i}", text)
    return text

  def text_prefix(self, text: jax.Array, text_mask: jax.Array,
                  deterministic: bool) -> jax.Array:
    """Text layers ``[0, t_biattention_id[0])``: ``[B, T, d_t] -> [B, T, d_t]``."""
    for i in range(self.cfg.t_biattention_id[0]):
      text = self._text_layer(i, text, text_mask, deterministic)
    return text

  def __call__(self, text: jax.Array, text_mask: jax.Array, image: jax.Array,
               image_mask: jax.Array, deterministic: bool,
               text_prefix_done: bool = False) -> tuple[jax.Array, jax.Array]:
    """text ``[B, T, d_t]``, image ``[B, R, d_v]`` -> encoded ``(text, image)``, same shapes."""
    skip = self.cfg.t_biattention_id[0] if text_prefix_done else 0
    text, image = constrain_activations(text), constrain_activations(image)
    for kind, i in schedule(self.cfg):
      if kind == "text" and i >= skip:
        text = self._text_layer(i, text, text_mask, deterministic)
      elif kind == "visual":
        image = constrain_activations(self.visual_layers[i](image, image_mask, deterministic))
        self.sow(INTERMEDIATES, f"visual_layer_{i}", image)
      elif kind == "coattention":
        text, image = map(constrain_activations, self.coattention_layers[i](
            text, text_mask, image, image_mask, deterministic))
        self.sow(INTERMEDIATES, f"coattention_layer_{i}", (text, image))
    return text, image
