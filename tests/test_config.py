"""ViLBERTConfig: the released JSON format, presets, validation, parameter count."""

import json

import jax
import numpy as np
import pytest

import vilbert_jax as vj
from reference import FIXTURES
from vilbert_jax.convert.mapping import unused_coattention_keys
from vilbert_jax.convert.original import param_shapes
from vilbert_jax.model.encoder import schedule


def _released_count(path, drop_unused: bool) -> int:
  """Unique parameters listed in a reference state-dict listing (tied decoder counted once)."""
  cfg = vj.preset("base")
  unused = set(unused_coattention_keys(cfg)) if drop_unused else set()
  total = 0
  for line in open(path):
    if line.startswith("#"):
      continue
    key, shape, _ = line.rstrip("\n").split("\t")
    if key == "cls.predictions.decoder.weight" or key in unused:
      continue
    total += int(np.prod(eval(shape)))  # pylint: disable=eval-used
  return total


def test_released_json_round_trips():
  raw = json.loads((FIXTURES / "bert_base_6layer_6conect.json").read_text())
  cfg = vj.ViLBERTConfig.from_original_json(FIXTURES / "bert_base_6layer_6conect.json")
  assert cfg == vj.preset("base")
  assert cfg.to_original_json() == raw
  assert vj.ViLBERTConfig.from_original_json(cfg.to_original_json()) == cfg
  for name in vj.PRESETS:
    c = vj.preset(name)
    assert vj.ViLBERTConfig.from_original_json(json.loads(json.dumps(c.to_original_json()))) == c


def test_single_stream_json_without_visual_keys():
  bert_json = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
               "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu"}
  cfg = vj.ViLBERTConfig.from_original_json(bert_json)
  assert cfg.single_stream and cfg.pooled_size == 768 and cfg.v_target_size == 1601


@pytest.mark.parametrize("name,expected", [
    ("base", 239_023_229),  # 250,044,029 released minus 11,020,800 unused q_dense.
])
def test_base_parameter_count_equals_original(name, expected):
  listing = FIXTURES / "state_dict_pretraining_6layer.txt"
  assert _released_count(listing, drop_unused=True) == expected
  assert _released_count(listing, drop_unused=False) == 250_044_029  # The released total.
  shapes = param_shapes(vj.ViLBERTForPretraining(vj.preset(name)))  # eval_shape: no allocation.
  assert sum(int(np.prod(s.shape)) for s in shapes.values()) == expected


def test_task_model_parameter_count_equals_original():
  listing = FIXTURES / "state_dict_vltasks_6layer.txt"
  model = vj.ViLBERTForVLTasks(vj.preset("base"), "neurips", num_answers=3129)
  shapes = param_shapes(model)
  assert sum(int(np.prod(s.shape)) for s in shapes.values()) == _released_count(
      listing, drop_unused=True)


@pytest.mark.parametrize("name,v_ids,t_ids", [
    ("coattn2", (0, 1), (10, 11)), ("coattn4", (0, 1, 2, 3), (8, 9, 10, 11)),
    ("coattn6", (0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10, 11)),
    ("coattn8", tuple(range(8)), tuple(range(4, 12))), ("bert_large", tuple(range(6)),
                                                        tuple(range(18, 24)))])
def test_depth_presets(name, v_ids, t_ids):
  cfg = vj.preset(name)
  assert (cfg.v_biattention_id, cfg.t_biattention_id) == (v_ids, t_ids)
  assert cfg.v_num_hidden_layers == len(v_ids)
  ops = schedule(cfg)
  assert sum(k == "coattention" for k, _ in ops) == len(v_ids)
  assert sorted(i for k, i in ops if k == "text") == list(range(cfg.num_hidden_layers))


def test_schedule_of_main_model():
  ops = schedule(vj.preset("base"))
  # text: TRM x6 -> (Co-TRM -> TRM) x6 ; visual: (Co-TRM -> TRM) x6.
  text_view = [k for k, _ in ops if k != "visual"]
  assert text_view == ["text"] * 6 + ["coattention", "text"] * 6
  visual_view = [k for k, _ in ops if k != "text"]
  assert visual_view == ["coattention", "visual"] * 6


@pytest.mark.parametrize("changes,message", [
    (dict(v_biattention_id=(0,)), "same length"),
    (dict(t_biattention_id=(3, 2)), "non-decreasing"),
    (dict(t_biattention_id=(2, 5)), r"must lie in \[0, 4\]"),
    (dict(hidden_size=62), "not divisible"),
    (dict(dtype="float8"), "dtype='float8'"),
    (dict(attention_impl="flash"), "attention_impl"),
    (dict(attention_impl="cudnn"), "no attention-probability dropout"),
])
def test_invalid_configs_fail_naming_the_field(changes, message):
  with pytest.raises(ValueError, match=message):
    vj.preset("tiny", **changes)


def test_unknown_json_key_and_activation_are_refused():
  raw = vj.preset("tiny").to_original_json()
  with pytest.raises(ValueError, match="unknown key.*v_hiden_size"):
    vj.ViLBERTConfig.from_original_json({**raw, "v_hiden_size": 3})
  with pytest.raises(ValueError, match="hidden_act='relu'"):
    vj.ViLBERTConfig.from_original_json({**raw, "hidden_act": "relu"})


def test_config_is_hashable_for_jit():
  cfg = vj.ViLBERTConfig.from_original_json(json.loads(json.dumps(vj.preset("tiny")
                                                                   .to_original_json())))
  assert hash(cfg) == hash(vj.preset("tiny"))
  assert jax.jit(lambda x, c: x, static_argnums=1)(1, cfg) == 1
