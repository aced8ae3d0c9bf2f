"""``Predictor`` prepares inputs exactly as evaluation does: the same logits for the same item."""

import jax
import numpy as np

from train_utils import tiny_task_config
from vilbert_jax.data import pipeline
from vilbert_jax.data.features import RegionFeatures
from vilbert_jax.predict import Predictor
from vilbert_jax.train import data as train_data
from vilbert_jax.train import trainer
from vilbert_jax.train.export import export_params


def test_predictor_answer_gives_the_vqa_evaluation_logits(tmp_path):
  """7 visual tokens for scenes of 10-36 regions: both paths must choose the same regions by
  detector confidence, tokenize the same way and give the same probabilities (rtol 1e-5)."""
  config = tiny_task_config("vqa", tmp_path / "tfds", **{"data.num_visual_tokens": 7})
  split = train_data.open_dataset(config, "validation")
  run = trainer.setup(config, num_examples=8, metadata=split.metadata,
                      devices=jax.devices()[:1])
  export_params(tmp_path / "export", run.state.params, run)
  predictor = Predictor.load(str(tmp_path / "export"))

  tok = train_data.tokenizer(config)
  loader = train_data.task_loader(config, split, "vqa", tok, seed=0, shuffle=False,
                                  num_epochs=1, drop_remainder=False, batch_size=4,
                                  **run.task.loader_options())
  batch = next(iter(loader))
  params = jax.device_get(run.state.params)
  logits = np.asarray(run.task.forward(run.model, params, batch, None).vqa_logits)
  vocab = run.task.answer_vocab
  source = pipeline.ItemSource(split, "vqa")
  for row, example_id in enumerate(batch["example_id"]):
    _, item, record, _ = source[int(example_id)]
    assert len(record["boxes"]) > 6  # more regions than fit: the selection is exercised
    image = RegionFeatures(str(example_id), np.asarray(record["features"], np.float32),
                           np.asarray(record["boxes"], np.float32), float(record["image_w"]),
                           float(record["image_h"]), np.asarray(record["cls_prob"], np.float32))
    question = pipeline.text(record["vqa_question"][item])
    answers = dict(predictor.answer(question, image, top_k=len(vocab)))
    expected = dict(zip(vocab, np.asarray(jax.nn.sigmoid(logits[row]))))
    assert answers.keys() == expected.keys()
    np.testing.assert_allclose([answers[a] for a in vocab], [expected[a] for a in vocab],
                               rtol=1e-5, err_msg=f"example {example_id}")
