"""Logical axis names -> mesh axes, and creating params already sharded on a mesh.

Every parameter of the model carries logical axis names; which mesh axis (if any) each name
is split over is configuration. The mesh has three axes: ``data`` (pure data parallel),
``fsdp`` (data parallel with parameters and optimiser state split) and ``tensor``
(Megatron-style: attention heads and FFN columns split).

Logical names used by the model:

==================  =================================================  ==================
name                what                                               default mesh axis
==================  =================================================  ==================
batch               examples (activations, inputs)                     (data, fsdp)
text_embed          text width d_t                                     fsdp
visual_embed        visual width d_v                                   fsdp
text_heads          text self-attention projection width               tensor
visual_heads        visual self-attention projection width             tensor
coattn_heads        co-attention projection width d_b                  tensor
text_mlp            text FFN / transform width                         tensor
visual_mlp          visual FFN / transform width                       tensor
pooled              pooled width d_b                                   tensor
task_hidden         hidden width of the task classifiers               tensor
vocab               WordPiece vocabulary (30522 is not divisible by 4)  -
text_positions      position-embedding rows                            -
token_types         token-type rows                                    -
task_tokens         12-in-1 task-token rows                            -
region_features     region feature width (2048)                        -
region_location     the 5 location coordinates                         -
region_classes      detector classes (1601)                            -
classes, answers    small output layers                                -
==================  =================================================  ==================
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("text_embed", "fsdp"),
    ("visual_embed", "fsdp"),
    ("text_heads", "tensor"),
    ("visual_heads", "tensor"),
    ("coattn_heads", "tensor"),
    ("text_mlp", "tensor"),
    ("visual_mlp", "tensor"),
    ("pooled", "tensor"),
    ("task_hidden", "tensor"),
    ("vocab", None),
    ("text_positions", None),
    ("token_types", None),
    ("task_tokens", None),
    ("region_features", None),
    ("region_location", None),
    ("region_classes", None),
    ("classes", None),
    ("answers", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``(data, fsdp, tensor)`` mesh with Auto axes (needed by linen logical constraints).

  ``data=-1`` takes every device left over by ``fsdp`` and ``tensor``.
  """
  devices = list(jax.devices() if devices is None else devices)
  if data == -1:
    if len(devices) % (fsdp * tensor):
      raise ValueError(f"{len(devices)} devices cannot be split into fsdp={fsdp} x "
                       f"tensor={tensor}")
    data = len(devices) // (fsdp * tensor)
  if data * fsdp * tensor != len(devices):
    raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} needs "
                     f"{data * fsdp * tensor} devices, {len(devices)} available")
  return jax.make_mesh((data, fsdp, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def param_shardings(boxed_abstract_params: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """NamedShardings for a (boxed, e.g. from ``jax.eval_shape(model.init)``) params tree."""
  specs = nn.get_partition_spec(boxed_abstract_params)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def constrain_activations(x: jax.Array) -> jax.Array:
  """An activation ``[B, ...]`` split over ``batch`` and whole on every other axis.

  Applied to the residual streams between blocks. Without it GSPMD meets the FSDP-split
  weights (``text_embed``/``visual_embed`` over ``fsdp``) with batch-split activations and may
  gather the activations instead of the weights. A no-op outside ``nn.logical_axis_rules``.
  """
  return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Inputs split over ``batch`` (data x fsdp) on their leading axis."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules = DEFAULT_RULES,
                 *args: Any) -> tuple[Any, Any]:
  """Runs ``init_fn(*args)`` (e.g. ``model.init``) so every array is created already sharded.

  Returns ``(unboxed variables, their shardings)``.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = param_shardings(abstract, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    variables = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return variables, shardings
