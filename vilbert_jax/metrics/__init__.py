"""Official metrics of the transfer tasks, as plain numpy (no JAX).

Units follow the official scripts: VQA accuracy and retrieval recalls in percent; grounding
and VCR accuracies as fractions in [0, 1]. The ``*_correct`` functions return per-example
booleans, the sufficient statistics to sum across batches and hosts.
"""
from vilbert_jax.metrics.grounding import (IOU_THRESHOLD, box_iou, grounding_accuracy,
                                           grounding_correct, grounding_targets)
from vilbert_jax.metrics.multiple_choice import multiple_choice_correct, vcr_accuracy
from vilbert_jax.metrics.retrieval import ScoreMatrixAccumulator, recall_at_k, retrieval_ranks
from vilbert_jax.metrics.vqa import (VQAAccumulator, build_answer_vocab, normalize_answer,
                                     soft_scores, vqa_accuracy, write_predictions)

__all__ = [
    "IOU_THRESHOLD", "ScoreMatrixAccumulator", "VQAAccumulator", "box_iou", "build_answer_vocab",
    "grounding_accuracy", "grounding_correct", "grounding_targets", "multiple_choice_correct",
    "normalize_answer", "recall_at_k", "retrieval_ranks", "soft_scores", "vcr_accuracy",
    "vqa_accuracy", "write_predictions",
]
