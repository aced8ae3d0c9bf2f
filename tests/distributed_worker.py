"""One process of the multi-process test: 3 train steps on a fixed global batch.

    python tests/distributed_worker.py PORT NUM_PROCESSES PROCESS_ID DEVICES_PER_PROCESS

Each process feeds its rows of the global batch; process 0 prints the losses as JSON.
"""

import json
import os
import sys

port, num_processes, process_id, local_devices = map(int, sys.argv[1:5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if num_processes > 1:
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                             process_id=process_id)

from train_utils import tiny_config  # noqa: E402  pylint: disable=g-import-not-at-top
from vilbert_jax.train import benchmark, trainer  # noqa: E402  pylint: disable=g-import-not-at-top
from vilbert_jax.train import data as train_data  # noqa: E402  pylint: disable=g-import-not-at-top

config = tiny_config("/nonexistent")  # no data is read: the batch is synthetic
run = trainer.setup(config, num_examples=64)
batch = benchmark.synthetic_batch(run.cfg, config.batch_size, config.data.max_text_len,
                                  config.data.num_visual_tokens)
rows = config.batch_size // num_processes
local = {k: v[process_id * rows:(process_id + 1) * rows] for k, v in batch.items()}
step = run.jit_train_step(donate=False)
state, losses = run.state, []
with jax.set_mesh(run.mesh):
  for _ in range(3):
    state, metrics = step(state, train_data.to_global(local, run.mesh))
    losses.append(float(metrics["loss/total"]))
if jax.process_index() == 0:
  print(json.dumps({"losses": losses, "devices": jax.device_count(),
                    "processes": jax.process_count()}))
