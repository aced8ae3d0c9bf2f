"""Synthetic twin of configs/multitask.py: VQA, retrieval and RefCOCO+ on the synthetic
scenes, trained together from the demo's pretrained model:

    python launch.py --config configs/multitask_synthetic.py \
        --workdir /tmp/multitask --config.init_checkpoint=/tmp/vilbert_demo

Each task has the batch and lengths of its single-task twin (``configs/<task>_synthetic.py``)
and its rate (2e-4, so every loss scale is 1); the heads get the same rate as the rest
(``multitask.head_learning_rate``), as in the single-task twins.
"""

from configs import multitask, synthetic

# The single-task twins this run is compared with.
TASKS = ("vqa", "retrieval", "refcoco_plus")
METRICS = {"vqa": "validation/accuracy", "retrieval": "validation/R@1",
           "refcoco_plus": "validation/accuracy"}


def get_config(variant: str = "base"):
  entries = {}
  for task in TASKS:
    twin = synthetic.synthetic_task_config(task, variant)
    entries[task] = multitask.task_entry(
        task, dataset=twin.data.name, train_split=twin.data.train_split,
        eval_splits=tuple(twin.data.eval_splits), batch_size=twin.batch_size,
        eval_batch_size=twin.eval.batch_size, max_text_len=twin.data.max_text_len,
        num_visual_tokens=twin.data.num_visual_tokens,
        learning_rate=twin.optimizer.learning_rate, metric=METRICS[task])
  c = multitask.multitask_config(entries, variant)
  twin = synthetic.synthetic_task_config(TASKS[0], variant)
  c.model = twin.model
  c.task.head_variant = twin.task.head_variant
  synthetic.use_synthetic_data(c)
  for key in ("max_text_len", "num_visual_tokens"):  # per task here
    del c.data[key]
  c.eval.update(twin.eval.to_dict())
  del c.eval["batch_size"], c.eval["num_batches"]
  c.multitask.head_learning_rate = twin.optimizer.learning_rate
  c.num_train_steps = 300
  c.log_every_steps = 50
  c.checkpoint_every_steps = 300
  return c
