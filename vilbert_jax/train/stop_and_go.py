"""Dynamic stop-and-go of multi-task training (12-in-1, Lu et al. 2020): one controller per task.

What the original does (``MultiTaskStopOnPlateau`` in ``vilbert/utils.py`` of
facebookresearch/vilbert-multi-task, driven by ``train_tasks.py``), restated:

* After every evaluation of a task its controller takes the validation score (higher is
  better). A score above ``best * (1 + threshold)`` (0.1% relative) becomes the new best and
  clears the count of bad evaluations; anything else adds one to the count.
* While a cooldown is pending (``cooldown`` evaluations, 1 in the original, after any switch)
  the evaluation decrements it and the count is cleared: the evaluation right after a switch
  never counts against the task.
* When the count exceeds ``patience`` (1: two bad evaluations in a row) the task goes to
  "stop" (again, if it already was), the cooldown starts and the count is cleared.
* Otherwise, a stopped task whose score fell below ``best * (1 - continue_threshold)`` (0.5%
  relative under its best) goes again ("go"), with the cooldown and a cleared count.
* A stopped task still trains at iterations whose index is a multiple of ``train_iter_gap``
  (4); a going task trains at every iteration.
* ``reset()`` forgets the best and the count and puts the task back to "go"; the training
  loop resets every controller at the end of the 0-based epochs in ``reset_after_epochs``
  ((5, 7): after the 6th and the 8th pass over the largest task, where the original's manual
  schedule would have dropped the learning rate).

The comparisons are the original's relative ones verbatim (``best`` starts at ``-inf``, so the
first score always becomes the best). The state is plain numbers (``state_dict`` /
``load_state_dict``), saved with every checkpoint so a resumed run takes the same decisions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class StopAndGoConfig:
  """The rule's constants; the defaults are the 12-in-1 run's."""

  patience: int = 1  # Bad evaluations tolerated; one more stops the task.
  threshold: float = 0.001  # Relative gain over the best that counts as progress.
  continue_threshold: float = 0.005  # Relative drop under the best that restarts a stopped task.
  cooldown: int = 1  # Evaluations ignored after a switch.
  train_iter_gap: int = 4  # A stopped task trains at iterations that are multiples of this.
  reset_after_epochs: tuple[int, ...] = (5, 7)  # 0-based epochs after which all reset.
  enabled: bool = True  # False: every task trains at every iteration, nothing is decided.

  def __post_init__(self):
    if self.patience < 0 or self.cooldown < 0 or self.train_iter_gap < 1:
      raise ValueError(f"stop_and_go: patience and cooldown must be >= 0 and train_iter_gap "
                       f">= 1, got {self}")
    if self.threshold < 0 or not 0 <= self.continue_threshold < 1:
      raise ValueError(f"stop_and_go: thresholds must be >= 0 (continue < 1), got {self}")


class StopAndGo:
  """The stop-and-go controller of one task (see the module docstring)."""

  def __init__(self, config: StopAndGoConfig = StopAndGoConfig()):
    self.config = config
    self.reset()

  def reset(self) -> None:
    """Back to "go" with no best score, no bad evaluation and no cooldown."""
    self.best = -math.inf
    self.num_bad = 0
    self.cooldown_left = 0
    self.stopped = False

  def step(self, score: float) -> bool:
    """Takes one evaluation's score; returns whether the task is now stopped."""
    c = self.config
    score = float(score)
    if score > self.best * (1.0 + c.threshold):
      self.best, self.num_bad = score, 0
    else:
      self.num_bad += 1
    if self.cooldown_left > 0:
      self.cooldown_left -= 1
      self.num_bad = 0
    if self.num_bad > c.patience:
      self.stopped, self.cooldown_left, self.num_bad = True, c.cooldown, 0
    elif self.stopped and score < self.best * (1.0 - c.continue_threshold):
      self.stopped, self.cooldown_left, self.num_bad = False, c.cooldown, 0
    return self.stopped

  def trains_at(self, iteration: int) -> bool:
    """Whether the task takes its update at (0-based) ``iteration``."""
    return (not self.config.enabled or not self.stopped
            or iteration % self.config.train_iter_gap == 0)

  def state_dict(self) -> dict[str, Any]:
    """The decision state as JSON-able numbers (``best`` -inf is written as None)."""
    return {"best": None if self.best == -math.inf else self.best, "num_bad": self.num_bad,
            "cooldown_left": self.cooldown_left, "stopped": self.stopped}

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    missing = {"best", "num_bad", "cooldown_left", "stopped"} - set(state)
    if missing:
      raise ValueError(f"stop-and-go state lacks {sorted(missing)}: {dict(state)}")
    self.best = -math.inf if state["best"] is None else float(state["best"])
    self.num_bad = int(state["num_bad"])
    self.cooldown_left = int(state["cooldown_left"])
    self.stopped = bool(state["stopped"])
