"""Multi-process start-up through ``jax.distributed``."""

from __future__ import annotations

import os

import jax
import ml_collections

# Environment variables of cluster launchers that jax.distributed detects by itself.
_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def maybe_initialize(config: ml_collections.ConfigDict) -> None:
  """Initialises ``jax.distributed`` when the job has several processes.

  Explicit ``config.distributed`` values (coordinator address, process count and id) win;
  otherwise cluster environments (SLURM, Open MPI, Cloud TPU) are auto-detected. A plain
  single-process run does nothing.
  """
  d = config.distributed
  if d.coordinator_address:
    if d.num_processes <= 0 or d.process_id < 0:
      raise ValueError("distributed.coordinator_address needs distributed.num_processes and "
                       "distributed.process_id")
    jax.distributed.initialize(coordinator_address=d.coordinator_address,
                               num_processes=d.num_processes, process_id=d.process_id)
  elif any(k in os.environ for k in _CLUSTER_ENV):
    jax.distributed.initialize()
