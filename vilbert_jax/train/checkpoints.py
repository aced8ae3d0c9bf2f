"""Orbax checkpoints of the train state together with the data-iterator state.

A run that stops (for any reason, SIGTERM included) and restarts with the same workdir
resumes from the latest checkpoint: same parameters, same optimiser state, same position in the
data stream, same dropout keys.
"""

from __future__ import annotations

import pathlib
import signal
import threading
from typing import Any, Mapping, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vilbert_jax.train.state import TrainState


class Checkpoints:
  """Periodic/final saves (keep the newest ``keep``) and automatic restore, in ``directory``."""

  def __init__(self, directory: str | pathlib.Path, keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data_iterator: Any,
           extra: Optional[Mapping[str, Any]] = None) -> None:
    """Saves (blocking until written) unless this step is already saved.

    ``data_iterator``: one grain iterator, or a mapping name -> iterator (several streams);
    ``extra``: JSON-able host state saved alongside (read back with ``extra``).
    """
    if step in self.manager.all_steps():
      return
    args = {"state": ocp.args.StandardSave(state)}
    for name, iterator in _iterators(data_iterator).items():
      args[name] = grain.checkpoint.CheckpointSave(iterator)
    if extra is not None:
      args["extra"] = ocp.args.JsonSave(dict(extra))
    self.manager.save(step, args=ocp.args.Composite(**args))
    self.manager.wait_until_finished()

  def restore(self, abstract_state: TrainState, data_iterator: Any,
              step: Optional[int] = None) -> TrainState:
    """Restores into ``abstract_state``'s shardings; sets the position of ``data_iterator``
    (one iterator or a mapping, as saved)."""
    step = self.latest_step() if step is None else step
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    for name, iterator in _iterators(data_iterator).items():
      args[name] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["state"]

  def extra(self, step: Optional[int] = None) -> dict:
    """The ``extra`` JSON saved with ``step`` (default: the latest)."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    return dict(restored["extra"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _iterators(data_iterator: Any) -> dict[str, Any]:
  """Checkpoint item name -> iterator: "data" for one, "data_<name>" for a mapping."""
  if data_iterator is None:
    return {}
  if isinstance(data_iterator, Mapping):
    return {f"data_{name}": it for name, it in data_iterator.items()}
  return {"data": data_iterator}


def restore_on_host(directory: str | pathlib.Path) -> Any:
  """A saved state (``<workdir>/checkpoints/<step>/state``) as host arrays, whatever the
  devices and processes it was saved from (a plain restore insists on the saving topology)."""
  directory = pathlib.Path(directory).absolute()
  metadata = ocp.StandardCheckpointHandler().metadata(directory)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        metadata)
  with ocp.StandardCheckpointer() as checkpointer:
    return jax.device_get(checkpointer.restore(directory, target))


def abstract_like(state: TrainState, shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs with shardings: what ``restore`` fills."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


class StopRequest:
  """Set by SIGTERM (preemption) or SIGINT; the loop saves a checkpoint and exits cleanly.

  With several processes, a signal may reach one process only, or each at a different step:
  ``agreed(step)`` combines the flags of all processes (a tiny all-gather) every
  ``check_every`` steps, so that every process stops after the same step and joins the same
  collective checkpoint save. One process needs no collective and stops at the next step.
  """

  def __init__(self, check_every: int = 1):
    if check_every < 1:
      raise ValueError(f"stop_check_every_steps={check_every} must be at least 1")
    self.check_every = check_every
    self._event = threading.Event()
    self.signal_name: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    self.signal_name = signal.Signals(signum).name
    self._event.set()

  def __bool__(self) -> bool:
    """Whether this process received a stop signal."""
    return self._event.is_set()

  def agreed(self, step: int) -> bool:
    """Whether every process stops after ``step`` (the same answer on all of them; every
    process must call this at every step)."""
    if jax.process_count() == 1:
      return bool(self)
    if step % self.check_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(bool(self), np.int32))
    return bool(np.any(flags))

  @property
  def reason(self) -> str:
    return (f"received {self.signal_name}" if self.signal_name
            else "another process received a stop signal")
