"""The registered `agm` in the training loop runs its authors' configuration
(lihong2303/AGM_ICCV2023: zero-input Shapley outputs, model/CREMAD_net.py:10-17; the gradient
through each output scaled by k_m, :42-55), wired as a hand-built optax chain would be."""

import json

import jax
import numpy as np
import optax
import pytest
from conftest import tiny_config

import mmreg
from mmreg.data import iterate_batches
from mmreg.data.registry import load_dataset
from mmreg.losses import agm_losses
from mmreg.models import build_model
from mmreg.train import (
  MethodNeeds,
  make_optimizer,
  method_loss_spec,
  method_needs,
  model_config_for,
)
from mmreg.train.loop import train_and_evaluate

K = 3


def _dominated_task(path, n=(96, 48, 48), seed=0):
  """Modality `a` carries the label (one-hot × 3 plus noise), `b` is pure noise."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, size in zip(("train", "val", "test"), n, strict=True):
    y = rng.integers(0, K, size)
    arrays[f"{split}/label"] = y
    arrays[f"{split}/a"] = (3.0 * np.eye(K)[y] + 0.3 * rng.normal(size=(size, K))).astype(
        np.float32)
    arrays[f"{split}/b"] = rng.normal(size=(size, 4)).astype(np.float32)
  np.savez(path, **arrays)
  return path


def _config(path, *, epochs=3, batch_size=32):
  cfg = tiny_config(epochs=epochs)
  cfg.data.name = "npz"
  cfg.data.path = str(path)
  cfg.data.options = {}
  cfg.train.batch_size = batch_size
  cfg.train.log_every = 1
  cfg.method.name = "agm"
  return cfg


def _log(workdir):
  return [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def agm_run(tmp_path_factory):
  """`--config.method.name=agm`, 3 epochs of 3 steps, every step logged."""
  root = tmp_path_factory.mktemp("agm")
  path = _dominated_task(root / "task.npz")
  cfg = _config(path, epochs=3)
  train_and_evaluate(cfg, root / "run", progress=False)
  steps = [r for r in _log(root / "run") if "loss/total" in r]
  return cfg, path, steps


def test_registered_agm_trains_the_authors_loss_split_and_acts(agm_run):
  _, _, steps = agm_run
  assert {k for k in steps[0] if k.startswith("loss/")} == {"loss/agm_a", "loss/agm_b",
                                                           "loss/total"}
  k = np.array([r["diag/coefficient"] for r in steps])
  assert np.all(np.isfinite(k))
  assert np.max(np.abs(k - 1.0)) > 0.2  # the coefficients act
  # a dominates: its gradient is slowed, b's boosted (CREMAD_main.py:145-152).
  assert np.mean(k[1:, 0]) < 1.0 < np.mean(k[1:, 1])


def test_first_loop_step_equals_a_hand_built_chain(agm_run):
  """Step 1 of `--config.method.name=agm` against `mmreg.agm` + `agm_losses` + a
  `zero_input_shapley` model, chained with the run's optimizer by hand, on the same batch:
  same losses, scores, coefficients, gradient and update norms."""
  cfg, path, steps = agm_run
  splits = load_dataset("npz", {"path": str(path)})
  model = build_model({**cfg.model.to_dict(), "modality_logits": "zero_input_shapley"},
                      splits.train.input_shapes, K, cfg.seed)
  spe = len(splits.train) // cfg.train.batch_size
  tx = optax.chain(mmreg.agm(mmreg.param_labels(model), modalities=model.modalities),
                   make_optimizer(cfg.optim.to_dict(), spe, cfg.train.epochs))
  graphdef, params, rest = mmreg.train.split_model(model)
  batch = next(iterate_batches(splits.train, cfg.train.batch_size, seed=cfg.seed, epoch=0))
  spec = agm_losses(model.modalities)

  @jax.jit
  def step(params):
    def losses(p):
      out = mmreg.train.model_apply(graphdef, p, rest, batch)[0]
      return spec(out, batch), out

    values, stack, out = mmreg.per_loss_grads(losses, params, has_aux=True)
    grads = stack.weighted_sum(spec.weights)
    updates, state = tx.update(grads, tx.init(params), params, loss_grads=stack,
                               modality_logits=out.modality_logits, labels=batch["label"])
    return values, optax.global_norm(grads), optax.global_norm(updates), state[0].diagnostics

  values, grad_norm, update_norm, diagnostics = step(params)
  first = steps[0]
  assert first["step"] == 1
  for m in model.modalities:
    np.testing.assert_allclose(first[f"loss/agm_{m}"], values[f"agm_{m}"], rtol=1e-5)
  np.testing.assert_allclose(first["grad_norm"], grad_norm, rtol=1e-5)
  np.testing.assert_allclose(first["update_norm"], update_norm, rtol=1e-5)
  for name in ("score", "coefficient", "ratio"):
    np.testing.assert_allclose(first[f"diag/{name}"], diagnostics[name], rtol=1e-5)
  assert update_norm > 0


@pytest.mark.parametrize("section, key, value, match", [
    ("model", "modality_logits", "aux_heads",
     r"method 'agm' runs on model.modality_logits='zero_input_shapley' but the config sets "
     r"model.modality_logits='aux_heads': drop that setting, or set "
     r"method.options.apply_to='encoders'"),
    ("model", "fusion", "sum", r"runs on model.fusion='concat' but the config sets "
                               r"model.fusion='sum'"),
    ("loss", "label_smoothing", 0.1, r"trains on its own losses, which ignore "
                                     r"\['loss.label_smoothing'\]"),
])
def test_conflicting_settings_are_one_error(tmp_path, section, key, value, match):
  cfg = _config(_dominated_task(tmp_path / "task.npz"), epochs=1)
  cfg[section][key] = value
  with pytest.raises(ValueError, match=match) as err:
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert "\n" not in str(err.value)
  assert not (tmp_path / "run").exists()


def test_loss_spec_fn_conflicts(tmp_path):
  cfg = _config(_dominated_task(tmp_path / "task.npz"), epochs=1)
  with pytest.raises(ValueError, match="trains on its own losses: drop loss_spec_fn, or set "
                                       "method.options.apply_to='encoders'"):
    train_and_evaluate(cfg, tmp_path / "run", progress=False,
                       loss_spec_fn=lambda mods, _: mmreg.losses.classification_losses(mods))


def test_encoders_option_keeps_the_run_model_and_losses():
  options = {"apply_to": "encoders"}
  assert method_needs("agm", options) == MethodNeeds()
  assert method_loss_spec("agm", ("a", "b"), options, {"label_smoothing": 0.1}) is None
  model = {"modality_logits": "aux_heads", "fusion": "sum"}
  assert model_config_for("agm", model, options) == model
  assert model_config_for("agm", {"modality_logits": "auto"}) == {
      "modality_logits": "zero_input_shapley", "fusion": "concat", "head": "linear"}
  assert method_needs("agm").loss_grads and method_needs("pcgrad").loss_grads
  assert method_loss_spec("agm", ("a", "b")).weights == {"agm_a": 1.0, "agm_b": 1.0}
