"""The region feature extractor against the PyTorch port's numbers (fixtures/frcnn_tiny.npz).

Tolerances (see vilbert_jax/detection/README.md): dense stages fp32, relative 1e-5 (an
independent float64 re-implementation differs from the reference by <= 6e-7; we see ~1e-6);
decoded boxes 1e-3 px absolute (coordinates up to ~500 px, float32 exp/multiply order);
the resize 1e-4 (torch sums in another order; README measured 5e-5); RoIPool and every
discrete decision (top-k, NMS, selection) exact, because the fixtures are tie-free and their
decision margins (meta/margins_json) are far above our numeric errors.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vilbert_jax as vj
from reference import FIXTURES, relative_error
from vilbert_jax.convert.__main__ import main as convert_main
from vilbert_jax.convert.frcnn import ConversionError, param_shapes, state_dict_shapes
from vilbert_jax.detection import preprocess as pre
from vilbert_jax.detection.boxes import pairwise_iou
from vilbert_jax.detection.model import FasterRCNN
from vilbert_jax.detection.roi_pool import roi_pool
from vilbert_jax.detection.rpn import propose
from vilbert_jax.detection.selection import (Protocol, bottom_up_keep, bottom_up_max_conf,
                                             port_keep)

NPZ = FIXTURES / "frcnn_tiny.npz"
IMAGES = (0, 1)


@pytest.fixture(scope="module")
def ref():
  with np.load(NPZ) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def cfg(ref):
  return vj.detection.DetectorConfig.from_yaml(str(ref["meta/config_yaml"]))


@pytest.fixture(scope="module")
def params(cfg):
  return vj.convert.frcnn_to_flax(vj.convert.load_state_dict(NPZ), cfg)


def _hwc(x):
  return np.asarray(x).transpose(1, 2, 0)


def test_config_from_yaml_text_and_file(ref, cfg, tmp_path):
  assert (cfg.depth, cfg.res4_channels, cfg.res5_channels, cfg.num_anchors) == (50, 64, 128, 12)
  assert (cfg.pre_nms_topk, cfg.post_nms_topk, cfg.nms_thresh_test) == (600, 50, (0.5, 0.6, 0.7))
  path = tmp_path / "config.yaml"
  path.write_text(str(ref["meta/config_yaml"]))
  assert vj.detection.DetectorConfig.from_yaml(path) == cfg
  assert vj.detection.DetectorConfig.from_yaml(str(path)) == cfg
  broken = str(ref["meta/config_yaml"]).replace("NUM_CLASSES: 20", "NUM_CLASSEZ: 20")
  with pytest.raises(KeyError, match="ROI_HEADS.NUM_CLASSES"):
    vj.detection.DetectorConfig.from_yaml(broken)
  no_rpn_topk = str(ref["meta/config_yaml"]).replace("  PRE_NMS_TOPK_TEST: 600\n", "")
  with pytest.warns(UserWarning, match="RPN.PRE_NMS_TOPK_TEST missing"):
    assert vj.detection.DetectorConfig.from_yaml(no_rpn_topk).pre_nms_topk == 6000


def test_converter_consumes_every_key_and_names_problems(ref, cfg, params):
  state = vj.convert.load_state_dict(NPZ)
  flat = jax.tree_util.tree_leaves_with_path(params)
  assert len(flat) == len(param_shapes(cfg))
  np.testing.assert_array_equal(params["rpn"]["cell_anchors"],
                                state["proposal_generator.anchor_generator.cell_anchors.0"])
  w = state["roi_heads.res5.0.conv2.weight"]
  np.testing.assert_array_equal(params["res5"]["res5_0"]["conv2"]["kernel"],
                                w.transpose(2, 3, 1, 0))
  missing = dict(state)
  del missing["backbone.res3.1.conv2.norm.running_var"]
  with pytest.raises(ConversionError, match=r"missing keys: backbone\.res3\.1\.conv2\.norm"):
    vj.convert.frcnn_to_flax(missing, cfg)
  extra = dict(state, **{"roi_heads.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ConversionError, match=r"unused keys: roi_heads\.extra\.weight"):
    vj.convert.frcnn_to_flax(extra, cfg)
  wrong = dict(state, **{"roi_heads.box_predictor.cls_score.bias": np.zeros(7, np.float32)})
  with pytest.raises(ConversionError, match=r"cls_score\.bias: shape \(7,\)"):
    vj.convert.frcnn_to_flax(wrong, cfg)


def test_converter_shapes_match_the_full_size_checkpoint(ref):
  listing = {}
  for line in (FIXTURES / "frcnn_vg_state_dict.txt").read_text().splitlines():
    key, shape, _ = line.split("\t")
    if not key.endswith("num_batches_tracked"):
      listing[key] = tuple(json.loads(shape.replace("(", "[").replace(",)", "]")
                                      .replace(")", "]")))
  yaml = str(ref["meta/config_yaml"])
  for old, new in [("DEPTH: 50", "DEPTH: 101"), ("STEM_OUT_CHANNELS: 8", "STEM_OUT_CHANNELS: 64"),
                   ("RES2_OUT_CHANNELS: 16", "RES2_OUT_CHANNELS: 256"),
                   ("WIDTH_PER_GROUP: 4", "WIDTH_PER_GROUP: 64"), ("HIDDEN_CHANNELS: 16",
                                                                    "HIDDEN_CHANNELS: 512"),
                   ("NUM_CLASSES: 20", "NUM_CLASSES: 1600"), ("NUM_ATTRS: 10", "NUM_ATTRS: 400")]:
    assert old in yaml
    yaml = yaml.replace(old, new)
  full = vj.detection.DetectorConfig.from_yaml(yaml)
  assert state_dict_shapes(full) == listing


def test_preprocessing_matches_the_port(ref, cfg):
  for name in ("img0", "img1", "resize_probe0", "resize_probe1"):
    lo, hi = ((int(ref[f"{name}/min_size_test"]), int(ref[f"{name}/max_size_test"]))
              if "probe" in name else (cfg.min_size_test, cfg.max_size_test))
    x, scale = pre.preprocess(ref[f"{name}/raw_bgr"], cfg, lo, hi)
    assert x.shape[:2] == tuple(ref[f"{name}/size_hw"]), name
    np.testing.assert_array_equal(scale, ref[f"{name}/scale_yx"])
    np.testing.assert_allclose(x, _hwc(ref[f"{name}/input"]), rtol=0, atol=1e-4, err_msg=name)
  with pytest.raises(ValueError, match="image 7: expected an H x W x 3 uint8"):
    pre.check_image(np.zeros((4, 4), np.uint8), "image 7")


def test_backbone_and_rpn_dense_stages_in_a_padded_bucket(ref, cfg, params):
  """The inputs padded into one 256 x 256 bucket give the unpadded reference maps."""
  model = FasterRCNN(cfg)
  inputs = [_hwc(ref[f"img{i}/input"]) for i in IMAGES]
  hw = np.asarray([x.shape[:2] for x in inputs], np.int32)

  @jax.jit
  def stages(images, image_hw):
    res4 = model.apply({"params": params}, images, image_hw, method="features")
    return res4, model.apply({"params": params}, res4, method="rpn_outputs")

  res4, (logits, deltas, _) = stages(pre.pad_batch(inputs, (256, 256), 2), hw)
  for i in IMAGES:
    want = ref[f"img{i}/res4"]
    h, w = want.shape[1:]
    assert relative_error(_hwc(want), res4[i, :h, :w]) < 1e-5
    assert relative_error(_hwc(ref[f"img{i}/rpn_logits"]), logits[i, :h, :w]) < 1e-5
    d = np.asarray(deltas[i, :h, :w]).reshape(h, w, -1)
    assert relative_error(_hwc(ref[f"img{i}/rpn_deltas"]), d) < 1e-5


@pytest.mark.parametrize("i", IMAGES)
def test_proposals_from_the_reference_rpn_outputs(ref, cfg, params, i):
  """Teacher-forced: stored logits/deltas -> top-k, decode, clip, NMS: same indices."""
  logits = jnp.asarray(_hwc(ref[f"img{i}/rpn_logits"]))
  h, w, a = logits.shape
  deltas = jnp.asarray(_hwc(ref[f"img{i}/rpn_deltas"]).reshape(h, w, a, 4))
  out = jax.jit(lambda l, d: propose(l, d, params["rpn"]["cell_anchors"],
                                     jnp.array([h, w]), jnp.asarray(ref[f"img{i}/size_hw"]),
                                     cfg))(logits, deltas)
  assert bool(out["valid"].all())
  order = ref[f"img{i}/proposals_pre_nms_anchor_idx"]
  np.testing.assert_array_equal(out["anchor_index"], order[ref[f"img{i}/rpn_nms_keep"]])
  np.testing.assert_allclose(out["boxes"], ref[f"img{i}/proposals"], rtol=0, atol=1e-3)
  np.testing.assert_allclose(out["logits"], ref[f"img{i}/proposal_logits"], rtol=0, atol=0)


def test_roi_pool_is_caffe_exact(ref):
  pool = jax.jit(roi_pool, static_argnums=(2, 3, 4))
  got = pool(jnp.asarray(_hwc(ref["roipool_synth/feat"])), ref["roipool_synth/rois"], 1 / 16,
             14, True)
  np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2), ref["roipool_synth/out"])
  for i in IMAGES:
    res4 = jnp.asarray(_hwc(ref[f"img{i}/res4"]))
    # Probes: edges at exact .5 cells, zero-size, reversed and beyond-the-map RoIs.
    got = pool(res4, ref[f"img{i}/roipool_probe_rois"], 1 / 16, 14, False)
    np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2),
                                  ref[f"img{i}/roipool_probe_out"])
    got = pool(res4, ref[f"img{i}/proposals"][:8], 1 / 16, 14, True)
    np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2),
                                  ref[f"img{i}/roipool_first8"])


def test_box_head_on_reference_proposals(ref, cfg, params):
  """Teacher-forced: stored res4 + proposals -> res5, mean pool, class/attribute/box heads."""
  model = FasterRCNN(cfg)
  head = jax.jit(lambda f, r: model.apply({"params": params}, f, r, method="box_head"))
  for i in IMAGES:
    pooled, cls, attr, deltas = head(_hwc(ref[f"img{i}/res4"])[None],
                                     ref[f"img{i}/proposals"][None])
    for got, key in [(pooled, "pooled"), (cls, "cls_logits"), (attr, "attr_logits"),
                     (deltas, "box_deltas")]:
      assert relative_error(got[0], ref[f"img{i}/{key}"]) < 1e-5, key


@pytest.mark.parametrize("i", IMAGES)
def test_bottom_up_rule_on_reference_scores(ref, i):
  """Teacher-forced: stored class distribution + raw boxes -> max_conf and every sweep."""
  boxes, probs = ref[f"img{i}/caffe_boxes_all"], ref[f"img{i}/cls_prob_bgfirst"]
  valid = np.ones(len(boxes), bool)
  max_conf = jax.jit(lambda b, p: bottom_up_max_conf(b, p, valid, 0.3))(boxes, probs)
  np.testing.assert_array_equal(max_conf, ref[f"img{i}/caffe_max_conf"])
  keep_fn = jax.jit(bottom_up_keep, static_argnums=2)
  keep, mask = keep_fn(max_conf, valid, Protocol("bottom_up", 0, 0, 0.2, 10, 24))
  np.testing.assert_array_equal(np.asarray(keep)[np.asarray(mask)], ref[f"img{i}/caffe_keep"])
  for conf, n, want in zip(ref[f"img{i}/caffe_sweep_conf"], ref[f"img{i}/caffe_sweep_n"],
                           ref[f"img{i}/caffe_sweep_keep"]):
    keep, mask = keep_fn(max_conf, valid, Protocol("bottom_up", 0, 0, float(conf), 10, 24))
    np.testing.assert_array_equal(np.asarray(keep)[np.asarray(mask)], want[:n])


@pytest.mark.parametrize("i", IMAGES)
def test_port_rule_on_reference_outputs(ref, cfg, i):
  """Teacher-forced: stored proposals, deltas and probabilities -> the port's detections."""
  out = jax.jit(lambda p, d, c: port_keep(p, d, c, jnp.ones(len(p), bool),
                                          jnp.asarray(ref[f"img{i}/size_hw"]), cfg))(
      ref[f"img{i}/proposals"], ref[f"img{i}/box_deltas"], ref[f"img{i}/cls_probs"])
  assert bool(out["mask"].all())
  np.testing.assert_array_equal(out["keep"], ref[f"img{i}/out_keep"])
  np.testing.assert_array_equal(out["classes"], ref[f"img{i}/out_obj_ids"])
  np.testing.assert_array_equal(out["scores"], ref[f"img{i}/out_obj_probs"])
  assert float(out["threshold"]) == float(ref[f"img{i}/out_nms_thresh"])
  scale = ref[f"img{i}/scale_yx"]
  boxes = np.asarray(out["boxes"]) * np.array([scale[1], scale[0]] * 2, np.float32)
  np.testing.assert_allclose(boxes, ref[f"img{i}/out_boxes"], rtol=0, atol=1e-3)


def _matched(got_boxes, want_boxes):
  """Each wanted box has a got box at IoU > 0.99, in the same order."""
  iou = np.asarray(pairwise_iou(jnp.asarray(want_boxes), jnp.asarray(got_boxes)))
  return np.argmax(iou, axis=1), iou.max(axis=1)


@pytest.mark.parametrize("protocol", ["port", "bottom_up"])
def test_extract_end_to_end_from_pixels(ref, cfg, params, protocol):
  """Raw BGR pixels -> own resize -> backbone -> RPN -> head -> rule, both images in one
  256-pixel bucket; boxes matched to the reference by IoU, then features compared."""
  if protocol == "bottom_up":  # The reference's Caffe rule: the port's sizes, 24 boxes max.
    proto, key = Protocol("bottom_up", cfg.min_size_test, cfg.max_size_test, max_boxes=24), "caffe"
  else:
    proto, key = "port", "out"
  images = [ref[f"img{i}/raw_bgr"] for i in IMAGES]
  records = vj.detection.extract(params, cfg, images, protocol=proto, image_ids=["a", "b"],
                                 bucket_step=256)
  for i, r in zip(IMAGES, records):
    want_boxes, want_features = ref[f"img{i}/{key}_boxes"], ref[f"img{i}/{key}_features"]
    assert r.image_id == "ab"[i]
    assert (r.image_h, r.image_w) == ref[f"img{i}/raw_bgr"].shape[:2]
    assert r.boxes.shape == want_boxes.shape
    order, iou = _matched(r.boxes, want_boxes)
    np.testing.assert_array_equal(order, np.arange(len(want_boxes)))
    assert iou.min() > 0.99
    np.testing.assert_allclose(r.boxes, want_boxes, rtol=0, atol=1e-3)
    assert relative_error(r.features, want_features) < 1e-4
    want_prob = (ref[f"img{i}/caffe_cls_prob"] if key == "caffe"
                 else ref[f"img{i}/cls_prob_bgfirst"][ref[f"img{i}/out_keep"]])
    np.testing.assert_allclose(r.cls_prob, want_prob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(r.cls_prob.sum(1), 1.0, atol=1e-5)


def test_region_outputs_for_given_boxes(ref, cfg, params):
  """Boxes in original pixels -> the reference's per-proposal head outputs."""
  pooled, cls, attr, deltas = vj.detection.region_outputs(
      params, cfg, ref["img1/raw_bgr"], ref["img1/caffe_boxes_all"], protocol="port")
  assert relative_error(pooled, ref["img1/pooled"]) < 1e-4
  assert relative_error(cls, ref["img1/cls_logits"]) < 1e-4
  assert relative_error(attr, ref["img1/attr_logits"]) < 1e-4
  assert relative_error(deltas, ref["img1/box_deltas"]) < 1e-4
  with pytest.raises(ValueError, match=r"boxes: expected finite \[N, 4\]"):
    vj.detection.region_outputs(params, cfg, ref["img1/raw_bgr"], np.zeros((3, 5)))


def test_convert_cli_writes_a_detector_directory(ref, cfg, tmp_path):
  """The README's `python -m vilbert_jax.convert frcnn ...` (in-process; the state dict as
  .npz since torch is not installed here)."""
  (tmp_path / "config.yaml").write_text(str(ref["meta/config_yaml"]))
  assert convert_main(["frcnn", "--checkpoint", str(NPZ), "--config",
                       str(tmp_path / "config.yaml"), "--output", str(tmp_path / "frcnn")]) == 0
  params, loaded = vj.detection.load_detector(tmp_path / "frcnn")
  assert loaded == cfg
  np.testing.assert_array_equal(params["box_predictor"]["cls_score"]["kernel"],
                                ref["param/roi_heads.box_predictor.cls_score.weight"].T)


def test_port_rule_keeps_the_last_threshold_when_none_gives_enough(ref, cfg):
  """The port crashes when no NMS threshold leaves MIN_DETECTIONS; we keep the 0.7 result."""
  valid = np.zeros(50, bool)
  valid[[3, 7, 11]] = True
  out = jax.jit(lambda p, d, c, v: port_keep(p, d, c, v, jnp.asarray(ref["img0/size_hw"]), cfg))(
      ref["img0/proposals"], ref["img0/box_deltas"], ref["img0/cls_probs"], valid)
  kept = np.asarray(out["keep"])[np.asarray(out["mask"])]
  assert set(kept) <= {3, 7, 11} and len(kept) >= 1
  assert out["threshold"] == np.float32(0.7)


def test_extract_names_a_bad_image(cfg, params):
  with pytest.raises(ValueError, match="image b: expected an H x W x 3 uint8"):
    vj.detection.extract(params, cfg, [np.zeros((8, 8, 3), np.uint8),
                                       np.zeros((8, 8, 3), np.float32)], image_ids=["a", "b"])


def test_converter_reads_safetensors_like_npz(params, cfg, tmp_path):
  state = vj.convert.load_state_dict(NPZ)
  vj.convert.save_state_dict({k: v for k, v in state.items() if v.dtype == np.float32},
                             tmp_path / "model.safetensors")
  again = vj.convert.frcnn_to_flax(vj.convert.load_state_dict(tmp_path / "model.safetensors"),
                                   cfg)
  jax.tree.map(np.testing.assert_array_equal, again, params)
