"""The inspection commands: checking a feature store, printing a built record."""
import numpy as np

from data_fixtures import random_record, synthetic_split  # noqa: F401  (fixture)
from vilbert_jax.data.features import encode_tsv_line
from vilbert_jax.data.inspect import main


def test_check_store_lists_bad_rows(tmp_path, capsys):
  rng = np.random.default_rng(0)
  path = tmp_path / "feats.tsv"
  with open(path, "wb") as f:
    for i in range(3):
      f.write(encode_tsv_line(random_record(rng, str(i), num_boxes=10 + i)))
    f.write(b"7\t640\t480\t2\tAAAA\tAAAA\n")
  assert main(["store", str(path), "--feature_dim", "8"]) == 1
  out = capsys.readouterr().out
  assert "4 records checked, 1 bad" in out and "boxes per image: min 10, mean 11.0, max 12" in out
  assert "bad: feats.tsv row 4 (image_id 7)" in out
  assert main(["store", str(path), "--limit", "3"]) == 0


def test_show_record(synthetic_split, capsys):  # noqa: F811
  name, data_dir = synthetic_split
  assert main(["dataset", name, "--data_dir", data_dir, "--split", "test", "--index", "2"]) == 0
  out = capsys.readouterr().out
  assert "record 2 of 30: image_id test_2" in out and "captions: [" in out
  assert "vqa: ['what color is the" in out
