"""One process of the multi-process stop-and-go test.

    python tests/stop_and_go_worker.py PORT NUM_PROCESSES PROCESS_ID

Every process sees different local scores (its own noise), takes them through
``multitask.same_on_every_host`` into one controller per task and prints its decisions as JSON.
"""

import json
import os
import sys

port, num_processes, process_id = map(int, sys.argv[1:4])
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import jax  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                           process_id=process_id)

from vilbert_jax.train import multitask  # noqa: E402  pylint: disable=g-import-not-at-top
from vilbert_jax.train.stop_and_go import StopAndGoConfig  # noqa: E402  pylint: disable=g-import-not-at-top

controllers = multitask.Controllers(["a", "b"], StopAndGoConfig())
noise = np.random.default_rng(process_id)
base = {"a": [50.0, 50.02, 50.03, 49.0, 49.0, 51.0], "b": [10.0, 11.0, 11.0, 11.0, 10.9, 10.0]}
decisions, local_scores, used_scores = [], [], []
for e in range(6):
  local = [base[k][e] + noise.normal(0.0, 0.2) for k in controllers.keys]
  used = multitask.same_on_every_host(local)
  for key, score in zip(controllers.keys, used):
    controllers.step(key, score)
  decisions.append(controllers.state_dict())
  local_scores.append(local)
  used_scores.append(used)
print(json.dumps({"process": jax.process_index(), "decisions": decisions,
                  "local": local_scores, "used": used_scores}))
