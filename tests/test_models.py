import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mmreg
from mmreg.models import FUSIONS, Conv1DEncoder, Conv2DEncoder, MultimodalClassifier, build_model
from mmreg.tree import flat_labels, leaf_paths


def _batch(rng, n=5):
  return {"a": jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)}


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_gives_the_structured_output(fusion, rng):
  model = mmreg.mlp_classifier({"a": 3, "b": 4}, 6, hidden=(8,), feature_dim=5, fusion=fusion,
                               latent_dim=7)
  out = model(_batch(rng))
  assert out.logits.shape == (5, 6)
  assert {m: z.shape for m, z in out.modality_logits.items()} == {"a": (5, 6), "b": (5, 6)}
  assert {m: h.shape for m, h in out.features.items()} == {"a": (5, 5), "b": (5, 5)}
  assert {m: z.shape for m, z in out.latents.items()} == {"a": (5, 7), "b": (5, 7)}
  assert np.isfinite(out.logits).all()


def test_late_fusion_with_a_missing_modality_is_the_present_modality_alone(rng):
  model = mmreg.mlp_classifier({"a": 3, "b": 4}, 6, hidden=(8,), fusion="late")
  batch = _batch(rng)
  present = {"b": jnp.array([True, False, True, False, True])}
  out = model({**batch, "present": present})
  a_only = model.fusion.heads["a"](model.encode("a", batch["a"]))
  both = (a_only + model.fusion.heads["b"](model.encode("b", batch["b"]))) / 2
  np.testing.assert_allclose(out.logits[1], a_only[1], rtol=1e-5)
  np.testing.assert_allclose(out.logits[0], both[0], rtol=1e-5)


def test_concat_fusion_zero_fills_missing_features(rng):
  model = mmreg.mlp_classifier({"a": 3, "b": 4}, 6, hidden=(8,), feature_dim=5)
  batch = _batch(rng)
  out = model({**batch, "present": {"a": jnp.array([False, True, True, True, True])}})
  np.testing.assert_array_equal(out.features["a"][0], 0)
  np.testing.assert_array_equal(out.fused[0, :5], 0)
  expected = model.head(jnp.concatenate([jnp.zeros(5), model.encode("b", batch["b"])[0]]))
  np.testing.assert_allclose(out.logits[0], expected, rtol=1e-5)


def test_attention_fusion_ignores_absent_tokens(rng):
  model = mmreg.mlp_classifier({"a": 3, "b": 4}, 6, hidden=(8,), fusion="attention")
  batch = _batch(rng)
  absent = {"b": jnp.zeros(5, bool)}
  out1 = model({**batch, "present": absent})
  other_b = {**batch, "b": batch["b"] + 10.0}
  out2 = model({**other_b, "present": absent})
  np.testing.assert_allclose(out1.logits, out2.logits, rtol=1e-5, atol=1e-6)


def test_param_labels_follow_structure_and_match_both_tree_kinds():
  model = mmreg.mlp_classifier({"audio": 3, "video": 4}, 6, fusion="gated")
  labels = mmreg.param_labels(model)
  assert labels["encoders"]["audio"]["layers"][0]["kernel"] == "audio"
  assert labels["fusion"]["gate"]["kernel"] == "fusion"
  assert labels["head"]["kernel"] == "head"
  assert labels["aux_heads"]["video"]["bias"] == "aux_head"
  assert labels["projectors"]["audio"]["kernel"] == "projector"
  params = nnx.state(model, nnx.Param)
  flat = flat_labels(mmreg.param_labels(model, pure=False), params)
  assert flat == flat_labels(labels, nnx.to_pure_dict(params))
  assert len(flat) == len(jax.tree.leaves(params))
  with pytest.raises(ValueError, match="do not match the parameter tree"):
    flat_labels(labels, {"head": params["head"]})


def test_labels_drive_a_partitioned_optimizer_through_nnx_optimizer(rng):
  model = mmreg.mlp_classifier({"a": 3, "b": 4}, 6, hidden=(8,))
  labels = mmreg.param_labels(model, pure=False)
  tx = optax.partition({"a": optax.set_to_zero(), "b": optax.sgd(0.1), "head": optax.sgd(0.1),
                        "fusion": optax.sgd(0.1), "aux_head": optax.sgd(0.1),
                        "projector": optax.sgd(0.1)}, labels)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  before = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  batch = {**_batch(rng), "label": jnp.array([0, 1, 2, 3, 4])}
  spec = mmreg.classification_losses(model.modalities)
  grads = nnx.grad(lambda m: spec.total(spec(m(batch), batch)))(model)
  opt.update(model, grads)
  after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  np.testing.assert_array_equal(after["encoders"]["a"]["layers"][0]["kernel"],
                                before["encoders"]["a"]["layers"][0]["kernel"])
  assert not np.allclose(after["encoders"]["b"]["layers"][0]["kernel"],
                         before["encoders"]["b"]["layers"][0]["kernel"])


def test_conv_encoders_and_auto_factory(rng):
  model = build_model({"feature_dim": 8, "channels": (4, 8)},
                      {"spec": (16, 3), "img": (8, 8, 3)}, 4, seed=0)
  assert isinstance(model.encoders["spec"], Conv1DEncoder)
  assert isinstance(model.encoders["img"], Conv2DEncoder)
  out = nnx.jit(lambda m, b: m(b))(model, {"spec": jnp.ones((2, 16, 3)),
                                           "img": jnp.ones((2, 8, 8, 3))})
  assert out.logits.shape == (2, 4)


def test_bad_model_inputs(rng):
  model = mmreg.mlp_classifier({"a": 3, "b": 4}, 6)
  with pytest.raises(ValueError, match="do not match the model"):
    model({"a": jnp.ones((2, 3)), "c": jnp.ones((2, 4))})
  with pytest.raises(ValueError, match="unknown fusion 'sideways'.*valid fusions"):
    mmreg.mlp_classifier({"a": 3}, 6, fusion="sideways")
  with pytest.raises(ValueError, match="at least one encoder"):
    MultimodalClassifier({}, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown encoder"):
    build_model({"encoder": "lstm"}, {"a": (3,)}, 2, seed=0)


class _Towers(nnx.Module):
  """Parameters under names the default rule does not know."""

  def __init__(self):
    rngs = nnx.Rngs(0)
    self.audio_net = nnx.Sequential(nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 4, rngs=rngs))
    self.video_net = nnx.Linear(5, 4, rngs=rngs)
    self.classifier = nnx.Linear(8, 2, rngs=rngs)


def _expected_labels(path):
  """The intended owner of each `_Towers` parameter, written out independently of the rules."""
  return {"audio_net": "audio", "video_net": "video", "classifier": "head"}[path[0]]


def test_param_labels_from_prefix_regex_and_function_rules():
  model = _Towers()
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  expected = [_expected_labels(p) for p in leaf_paths(pure)]
  by_prefix = mmreg.param_labels(model, {"audio_net": "audio", "video_net": "video",
                                         "classifier": "head"})
  by_regex = mmreg.param_labels(model, {re.compile(r"^audio_"): "audio",
                                        re.compile(r"^video_"): "video",
                                        re.compile(r"kernel|bias"): "head"})  # first match wins
  by_function = mmreg.param_labels(model, _expected_labels)
  for labels in (by_prefix, by_regex, by_function):
    assert jax.tree.structure(labels) == jax.tree.structure(pure)
    assert jax.tree.leaves(labels) == expected
  assert by_prefix["audio_net"]["layers"][1]["kernel"] == "audio"
  # A deeper prefix, on a plain parameter pytree and on an nnx.State.
  deeper = {"audio_net/layers/0": "audio", "audio_net": "fusion", "video_net": "video",
            "classifier": "head"}
  tree = mmreg.param_labels(pure, deeper)
  assert tree["audio_net"]["layers"][0]["bias"] == "audio"
  assert tree["audio_net"]["layers"][1]["bias"] == "fusion"
  state_labels = mmreg.param_labels(nnx.state(model, nnx.Param), _expected_labels)
  assert flat_labels(state_labels, pure) == expected
  assert flat_labels(mmreg.param_labels(model, _expected_labels, pure=False),
                     nnx.state(model, nnx.Param)) == expected


def test_unlabelled_parameters_are_listed_with_the_fix():
  model = _Towers()
  with pytest.raises(ValueError, match=(
      r"8 parameters have no label: audio_net/layers/0/bias, .*classifier/kernel.*default rule "
      r"labels only the parts of a MultimodalClassifier.*mmreg.param_labels\(model, "
      r"\{'audio_net': '<label>', 'classifier': '<label>', 'video_net': '<label>'\}\)")):
    mmreg.param_labels(model)
  with pytest.raises(ValueError, match=(
      r"2 parameters have no label: video_net/bias, video_net/kernel\. Add rules for them, e.g. "
      r"mmreg.param_labels\(model, \{\*\*rules, 'video_net': '<label>'\}\).*'aux_head'")):
    mmreg.param_labels(model, {"audio": "x", "audio_net": "audio", "classifier": "head"})
  with pytest.raises(ValueError, match=r"6 parameters have no label.*returned None"):
    mmreg.param_labels(model, lambda path: "head" if path[0] == "classifier" else None)
  with pytest.raises(TypeError, match="rule key 3: use a path prefix string"):
    mmreg.param_labels(model, {3: "audio"})
  with pytest.raises(TypeError, match="labels are strings"):
    mmreg.param_labels(model, {"audio_net": 1})
  with pytest.raises(TypeError, match="gave 7 for parameter audio_net/layers/0/bias"):
    mmreg.param_labels(model, lambda path: 7)
