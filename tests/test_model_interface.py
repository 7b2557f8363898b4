"""A user-written model (its own attribute names) works wherever MultimodalClassifier does."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mmreg
from mmreg.models import MODELS, check_model, model_from_config, register_model
from mmreg.train import init_train_state, make_predict, make_train_step
from mmreg.train.loop import config_to_dict, train_and_evaluate
from mmreg.train.validate import validate_config
from tests.conftest import tiny_config

RULES = {"speech_tower": "audio", re.compile(r"^vision_"): "video", "classifier": "head",
         "side_heads": "aux_head"}


class TwoTower(nnx.Module):
  """Two ReLU encoders, concat fusion, a linear classifier, optional unimodal heads."""

  def __init__(self, dims, num_classes, *, width=8, side_heads=False, seed=0):
    rngs = nnx.Rngs(seed)
    self.modalities = tuple(dims)
    first, second = self.modalities
    self.speech_tower = nnx.Linear(dims[first], width, rngs=rngs)
    self.vision_tower = nnx.Linear(dims[second], width, rngs=rngs)
    self.classifier = nnx.Linear(2 * width, num_classes, rngs=rngs)
    self.side_heads = (nnx.Dict({m: nnx.Linear(width, num_classes, rngs=rngs)
                                 for m in self.modalities}) if side_heads else None)

  def param_label_rule(self, path):
    """What `mmreg.param_labels(model)` uses (the loop labels a registered model with it)."""
    return {"speech_tower": self.modalities[0], "vision_tower": self.modalities[1],
            "classifier": "head", "side_heads": "aux_head"}.get(path[0])

  def encode(self, modality, x):
    tower = self.speech_tower if modality == self.modalities[0] else self.vision_tower
    return nnx.relu(tower(x))

  def encode_batch(self, batch):
    return {m: self.encode(m, batch[m]) for m in self.modalities}

  def from_features(self, features, present=None):
    fused = jnp.concatenate([features[m] for m in self.modalities], axis=-1)
    side = ({} if self.side_heads is None
            else {m: self.side_heads[m](features[m]) for m in self.modalities})
    return mmreg.ModelOutput(logits=self.classifier(fused), modality_logits=side,
                             features=dict(features), latents={}, fused=fused)

  def __call__(self, batch):
    return self.from_features(self.encode_batch(batch), batch.get("present"))


def _batch(rng, n=6, k=4):
  return {"audio": jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
          "video": jnp.asarray(rng.normal(size=(n, 5)), jnp.float32),
          "label": jnp.asarray(np.arange(n) % k)}


def _sgd_step_oracle(p, batch, lr):
  """One SGD step on the fused cross-entropy of TwoTower, by hand in NumPy:
  h_m = relu(x_m W_m + b_m), z = [h_a, h_v] W_c + b_c, L = mean_i −log softmax(z_i)[y_i]."""
  x = {m: np.asarray(batch[m], np.float64) for m in ("audio", "video")}
  tower = {"audio": p["speech_tower"], "video": p["vision_tower"]}
  h = {m: np.maximum(x[m] @ tower[m]["kernel"] + tower[m]["bias"], 0.0) for m in x}
  fused = np.concatenate([h["audio"], h["video"]], axis=1)
  z = fused @ p["classifier"]["kernel"] + p["classifier"]["bias"]
  prob = np.exp(z - z.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  onehot = np.eye(z.shape[1])[np.asarray(batch["label"])]
  dz = (prob - onehot) / z.shape[0]
  grads = {"classifier": {"kernel": fused.T @ dz, "bias": dz.sum(0)}}
  dfused = dz @ p["classifier"]["kernel"].T
  width = h["audio"].shape[1]
  for i, (m, name) in enumerate((("audio", "speech_tower"), ("video", "vision_tower"))):
    dh = dfused[:, i * width:(i + 1) * width] * (h[m] > 0)
    grads[name] = {"kernel": x[m].T @ dh, "bias": dh.sum(0)}
  return {name: {k: p[name][k] - lr * grads[name][k] for k in grads[name]} for name in grads}


def test_user_model_trains_through_make_train_step_like_the_hand_gradient(rng):
  model = TwoTower({"audio": 3, "video": 5}, 4)
  batch = _batch(rng)
  tx = optax.sgd(0.5)
  graphdef, state = init_train_state(model, tx, seed=0)
  before = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params)
  step = make_train_step(graphdef, mmreg.classification_losses(()), tx, steps_per_epoch=1)
  state, metrics = step(state, batch)
  expected = _sgd_step_oracle(before, batch, 0.5)
  for name in expected:
    for k in expected[name]:
      np.testing.assert_allclose(state.params[name][k], expected[name][k], rtol=1e-4, atol=1e-6)
  assert set(metrics) >= {"loss/fused", "loss/total"}
  out = make_predict(graphdef)(state.params, state.model_state, batch)
  assert out.modality_logits == {} and out.latents == {}


def test_user_model_with_its_own_heads_trains_with_mmpareto(rng):
  model = TwoTower({"audio": 3, "video": 5}, 4, side_heads=True)
  labels = mmreg.param_labels(model, RULES)
  assert labels["side_heads"]["video"]["kernel"] == "aux_head"
  assert mmreg.param_labels(model) == labels  # the model's own `param_label_rule`
  tx = optax.chain(mmreg.mmpareto(labels), optax.sgd(0.1))
  graphdef, state = init_train_state(model, tx, seed=0)
  step = make_train_step(graphdef, mmreg.classification_losses(model.modalities), tx,
                         steps_per_epoch=2, with_loss_grads=True)
  first = jax.tree.map(jnp.copy, state.params)
  for _ in range(2):
    state, metrics = step(state, _batch(rng))
  assert set(metrics) >= {"loss/fused", "loss/audio", "loss/video"}
  assert np.isfinite(float(metrics["loss/total"]))
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), first, state.params)
  assert all(jax.tree.leaves(moved))


def test_what_a_model_lacks_is_a_clear_error(rng):
  model = TwoTower({"audio": 3, "video": 5}, 4)
  batch = _batch(rng)
  # Losses and methods that need unimodal logits say so.
  graphdef, state = init_train_state(model, optax.sgd(0.1), seed=0)
  step = make_train_step(graphdef, mmreg.classification_losses(model.modalities),
                         optax.sgd(0.1), steps_per_epoch=1)
  with pytest.raises(ValueError, match=r"unimodal loss 'audio' needs modality_logits.*returns "
                                       r"modality_logits for \[\].*give the model unimodal heads"):
    step(state, batch)
  tx = optax.chain(mmreg.ogm_ge(mmreg.param_labels(model, RULES)), optax.sgd(0.1))
  graphdef, state = init_train_state(model, tx, seed=0)
  step = make_train_step(graphdef, mmreg.classification_losses(()), tx, steps_per_epoch=1)
  with pytest.raises(ValueError, match=r"ogm_ge: modality_logits has no entry for \['audio', "):
    step(state, batch)


class _NoFromFeatures(nnx.Module):
  modalities = ("audio",)

  def __init__(self):
    self.net = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

  def encode(self, modality, x):
    return self.net(x)

  def encode_batch(self, batch):
    return {"audio": self.net(batch["audio"])}

  def __call__(self, batch):
    return self.net(batch["audio"])


class _TwoArgCall(TwoTower):
  def __call__(self, audio, video):
    return self.from_features({"audio": audio, "video": video})


class _ReturnsLogits(TwoTower):
  def __call__(self, batch):
    return super().__call__(batch).logits


class _DropsFeatures(TwoTower):
  def from_features(self, features, present=None):
    return super().from_features(features, present)._replace(features={})


class _VectorLogits(TwoTower):
  def from_features(self, features, present=None):
    out = super().from_features(features, present)
    return out._replace(logits=out.logits[:, 0])


def test_check_model_names_what_is_missing(rng):
  with pytest.raises(TypeError, match=r"lacks \['from_features'\].*a model is a flax.nnx.Module"):
    check_model(_NoFromFeatures())
  with pytest.raises(TypeError, match="not a flax.nnx.Module"):
    check_model(lambda batch: batch)
  with pytest.raises(TypeError, match=r"_TwoArgCall.__call__ cannot be called as __call__\(batch"):
    init_train_state(_TwoArgCall({"audio": 3, "video": 5}, 4), optax.sgd(0.1), seed=0)
  model = TwoTower({"audio": 3, "video": 5}, 4)
  model.modalities = "audio"
  with pytest.raises(TypeError, match="modalities is 'audio'; it must be a non-empty tuple"):
    check_model(model)
  batch = _batch(rng)
  with pytest.raises(ValueError, match=r"batch modalities \['audio', 'text'\] do not match"):
    check_model(TwoTower({"audio": 3, "video": 5}, 4),
                {"audio": batch["audio"], "text": batch["video"]})


@pytest.mark.parametrize("model_cls, message", [
    (_ReturnsLogits, r"_ReturnsLogits\(batch\) returned ArrayImpl; return mmreg.ModelOutput"),
    (_DropsFeatures, r"ModelOutput.features lacks \['audio', 'video'\]"),
    (_VectorLogits, r"ModelOutput.logits has shape \(6,\); it must be \[batch, classes\]"),
])
def test_a_bad_output_is_named_by_check_model_and_by_the_step(model_cls, message, rng):
  model, batch = model_cls({"audio": 3, "video": 5}, 4), _batch(rng)
  with pytest.raises(TypeError, match=message.replace("ArrayImpl", "ShapeDtypeStruct")):
    check_model(model, batch)
  graphdef, state = init_train_state(model, optax.sgd(0.1), seed=0)
  step = make_train_step(graphdef, mmreg.classification_losses(()), optax.sgd(0.1),
                         steps_per_epoch=1)
  with pytest.raises(TypeError, match=message.replace("ArrayImpl", r"\w+")):
    step(state, batch)


def _two_tower_builder(cfg, input_shapes, num_classes, seed):
  return TwoTower({m: shape[0] for m, shape in input_shapes.items()}, num_classes,
                  width=int(cfg.get("feature_dim", 8)),
                  side_heads=bool(cfg.get("side_heads", False)), seed=seed)


def test_a_registered_model_trains_in_the_loop(tmp_path, request):
  register_model("two_tower", _two_tower_builder)
  request.addfinalizer(lambda: MODELS.pop("two_tower"))
  cfg = tiny_config(epochs=1)
  cfg.model.name = "two_tower"
  cfg.train.log_every = 4
  results = train_and_evaluate(cfg, tmp_path / "run", progress=False)
  assert results["test"]["accuracy"] > 0.3  # 10 classes: chance is 0.1
  assert results["test"]["modality_accuracy"] == {}  # the model has no unimodal heads
  assert set(results["state"].params) == {"speech_tower", "vision_tower", "classifier"}
  first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
  # The loop trains the unimodal losses of exactly the heads the model has: none.
  assert {k for k in first if k.startswith("loss/")} == {"loss/fused", "loss/total"}


def test_model_registry_errors():
  cfg = config_to_dict(tiny_config(epochs=1))
  cfg["model"]["name"] = "no_such_model"
  with pytest.raises(ValueError, match=r"model.name='no_such_model': unknown model; valid "
                                       r"models: \[.*'multimodal_classifier'"):
    validate_config(cfg)
  with pytest.raises(ValueError, match=r"unknown model; valid models: .*register_model"):
    model_from_config({"name": "no_such_model"}, {"a": (3,)}, 2, seed=0)
  with pytest.raises(TypeError, match="the builder must be a callable"):
    register_model("broken", "not a function")
  register_model("returns_a_function", lambda cfg, shapes, k, seed: (lambda batch: batch))
  try:
    with pytest.raises(TypeError, match="builder of model 'returns_a_function' returned an "
                                        "unusable model: function is not a flax.nnx.Module"):
      model_from_config({"name": "returns_a_function"}, {"a": (3,)}, 2, seed=0)
  finally:
    del MODELS["returns_a_function"]
  default = model_from_config({}, {"a": (3,), "b": (4,)}, 2, seed=0)
  assert isinstance(default, mmreg.MultimodalClassifier)
