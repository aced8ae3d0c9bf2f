"""Box selection, 5-d locations, IMG token, padding, IoU and hard negatives."""
import numpy as np

from vilbert_jax.data import hard_negatives, regions


def test_select_boxes_keeps_10_to_36_by_confidence():
  rng = np.random.default_rng(0)
  prob = rng.random((60, 5)) * 0.1
  prob[:, 0] = 1.0  # background is ignored for confidence
  prob[7, 3] = 0.9
  prob[[3, 11, 40], 1] = [0.5, 0.3, 0.25]
  keep = regions.select_boxes(prob, 60)
  assert len(keep) == 10  # only 4 confident boxes: the minimum applies
  assert {7, 3, 11, 40} <= set(keep.tolist()) and np.all(np.diff(keep) > 0)  # stored order
  prob[:, 2] = 0.5  # all confident: the maximum applies
  assert len(regions.select_boxes(prob, 60)) == 36
  assert len(regions.select_boxes(prob[:5], 5)) == 5
  np.testing.assert_array_equal(regions.select_boxes(None, 50), np.arange(36))


def test_box_locations():
  loc = regions.box_locations(np.array([[0, 0, 320, 240], [160, 120, 640, 480]]), 640, 480)
  np.testing.assert_allclose(loc, [[0, 0, 0.5, 0.5, 0.25], [0.25, 0.25, 1, 1, 0.5625]])


def test_visual_inputs_img_token_and_padding():
  feats = np.arange(12, dtype=np.float32).reshape(3, 4)
  boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (3, 1))
  out = regions.visual_inputs(regions.Regions(feats, boxes, 20, 20), 6)
  np.testing.assert_allclose(out["image_feat"][0], feats.mean(0))
  np.testing.assert_allclose(out["image_loc"][0], [0, 0, 1, 1, 1])
  np.testing.assert_array_equal(out["image_mask"], [1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(out["image_feat"][4:], 0)
  np.testing.assert_array_equal(out["image_loc"][4:], 0)
  assert out["image_feat"].dtype == np.float32 and out["image_mask"].dtype == np.int32
  truncated = regions.visual_inputs(regions.Regions(feats, boxes, 20, 20), 3)  # IMG + 2 regions
  np.testing.assert_allclose(truncated["image_feat"][0], feats[:2].mean(0))
  masked = regions.visual_inputs(
      regions.Regions(feats, boxes, 20, 20, zero_rows=np.array([False, True, False])), 6)
  np.testing.assert_array_equal(masked["image_feat"][2], 0)
  np.testing.assert_allclose(masked["image_feat"][0], (feats[0] + feats[2]) / 3)
  np.testing.assert_array_equal(feats[1], [4, 5, 6, 7])  # the input is not modified


def test_as_float_widens_every_float16_value_exactly():
  halves = np.arange(2**16, dtype=np.uint16).view(np.float16)  # every bit pattern
  widened = regions.as_float(halves)
  finite = np.isfinite(halves)
  np.testing.assert_array_equal(widened[finite].view(np.uint32),  # bits: keeps -0.0 too
                                halves[finite].astype(np.float32).view(np.uint32))
  np.testing.assert_array_equal(widened, halves.astype(np.float32))  # inf/NaN: numpy's path
  f32 = np.ones(3, np.float32)
  assert regions.as_float(f32) is f32 and regions.as_float(halves, np.float16) is halves


def test_visual_batch_equals_each_image_alone():
  rng = np.random.default_rng(0)
  images = [regions.Regions(rng.random((n, 4), dtype=np.float32).astype(dtype),
                            np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1)), 20, 40,
                            zero_rows=rng.random(n) < 0.5)
            for n, dtype in [(3, np.float16), (7, np.float16), (5, np.float16)]]
  batch = regions.visual_batch(images, 6)  # the 7-region image is truncated to 5
  assert batch["image_feat"].dtype == np.float16
  for b, image in enumerate(images):
    alone = regions.visual_inputs(image, 6)
    for key, value in alone.items():
      np.testing.assert_array_equal(batch[key][b], value)
    n = min(len(image.features), 5)
    kept = np.where(image.zero_rows[:n, None], 0, image.features[:n].astype(np.float32))
    np.testing.assert_allclose(alone["image_feat"][0], kept.mean(0), rtol=1e-3)


def test_nearest_images_excludes_self_and_orders_by_distance():
  x = np.array([[0.0], [1.0], [3.0], [10.0]], np.float32)
  np.testing.assert_array_equal(hard_negatives.nearest_images(x, k=2, chunk=3),
                                [[1, 2], [0, 2], [1, 0], [2, 1]])
  assert hard_negatives.nearest_images(x, k=100).shape == (4, 3)
