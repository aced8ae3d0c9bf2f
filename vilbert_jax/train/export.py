"""The ``export/`` of a finished run: params plus what it takes to use them.

Layout (a params directory, see ``vilbert_jax.params_io``, plus ``task.json``)::

    export/params/      Orbax params tree
    export/model.json   model config and head variant (``params_io.ModelSpec``)
    export/task.json    {"task", "answer_vocab", "tokenizer", "max_text_len",
                         "num_visual_tokens", "task_id" (task-token models, else null)};
                        a tokenizer file is copied next to it

``--config.init_checkpoint=<workdir>`` and ``vilbert_jax.predict.Predictor.load`` read it.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import jax
from jax.experimental import multihost_utils

from vilbert_jax.params_io import ModelSpec, save_params

TASK_FILE = "task.json"


def export_params(directory: pathlib.Path, params: Any, run: Any) -> pathlib.Path:
  """Writes ``params`` of ``run`` (a ``trainer.Run``) to ``directory``, replacing an old one.

  The tokenizer is named by the config ("synthetic" = shipped) or, for a file, copied.
  """
  config = run.config
  if jax.process_index() == 0 and directory.exists():
    shutil.rmtree(directory)
  multihost_utils.sync_global_devices("export: old directory removed")
  save_params(directory, jax.device_get(params), ModelSpec.of(run.model))
  if jax.process_index() == 0:
    tokenizer = config.data.tokenizer
    source = pathlib.Path(tokenizer).expanduser()
    if tokenizer != "synthetic" and source.is_file():
      shutil.copy(source, directory / source.name)
      tokenizer = source.name
    (directory / TASK_FILE).write_text(json.dumps({
        "task": run.task.name,
        "answer_vocab": run.task.metadata.get("answer_vocab"),
        "tokenizer": tokenizer,
        "max_text_len": config.data.max_text_len,
        "num_visual_tokens": config.data.num_visual_tokens,
        "task_id": run.task.configured_task_id if run.cfg.task_specific_tokens else None,
    }, indent=2))
  return directory
