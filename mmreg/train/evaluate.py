"""Evaluation over a dataset in fixed-size batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mmreg.data.dataset import MultimodalDataset, eval_batches
from mmreg.metrics.classification import accuracy, macro_f1
from mmreg.models.classifier import ModelOutput

Predict = Callable[[Any, Any, dict], ModelOutput]


def gather_outputs(predict: Predict, params: Any, model_state: Any, data: MultimodalDataset,
                   batch_size: int) -> dict[str, Any]:
  """Fused logits `[N, K]`, per-modality logits `{m: [N, K]}` (of the modalities the model
  has unimodal logits for) and fused features `[N, d]`."""
  logits, modality_logits, fused = [], {}, []
  for batch, valid in eval_batches(data, batch_size):
    out = predict(params, model_state, batch)
    logits.append(np.asarray(out.logits)[valid])
    fused.append(np.asarray(out.fused)[valid])
    for m, z in out.modality_logits.items():  # empty for a model without unimodal heads
      modality_logits.setdefault(m, []).append(np.asarray(z)[valid])
  return {"logits": np.concatenate(logits), "fused": np.concatenate(fused),
          "modality_logits": {m: np.concatenate(v) for m, v in modality_logits.items()}}


def classification_report(outputs: dict[str, Any], labels: np.ndarray,
                          num_classes: int) -> dict[str, Any]:
  """Accuracy and macro-F1 of the fused prediction, and accuracy of each auxiliary head."""
  pred = outputs["logits"].argmax(-1)
  return {
      "accuracy": accuracy(labels, pred),
      "macro_f1": macro_f1(labels, pred, num_classes),
      "modality_accuracy": {m: accuracy(labels, z.argmax(-1))
                            for m, z in outputs["modality_logits"].items()},
  }


def evaluate(predict: Predict, params: Any, model_state: Any, data: MultimodalDataset,
             batch_size: int = 512) -> dict[str, Any]:
  outputs = gather_outputs(predict, params, model_state, data, batch_size)
  return classification_report(outputs, data.labels, data.num_classes)
