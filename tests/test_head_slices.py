import functools
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mmreg
from mmreg.models import concat_head_slices


def oracle_slices(a, v, weight, bias):
  """GeWu-Lab/OGM-GE_CVPR2022:main.py:88-93 with torch's weight [K, d_a + d_v]."""
  weight_size = weight.shape[1]
  out_v = v @ weight[:, weight_size // 2:].T + bias / 2
  out_a = a @ weight[:, :weight_size // 2].T + bias / 2
  return out_a, out_v


def test_two_modalities_match_the_code(rng):
  a, v = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  weight, bias = rng.normal(size=(3, 8)), rng.normal(size=3)
  got = concat_head_slices(jnp.asarray(weight.T, jnp.float32), jnp.asarray(bias, jnp.float32),
                           {"a": jnp.asarray(a, jnp.float32), "v": jnp.asarray(v, jnp.float32)})
  want_a, want_v = oracle_slices(a, v, weight, bias)
  np.testing.assert_allclose(got["a"], want_a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["v"], want_v, rtol=1e-5, atol=1e-6)


def test_three_modalities_of_unequal_width_sum_to_the_head(rng):
  feats = {m: jnp.asarray(rng.normal(size=(4, d)), jnp.float32) for m, d in
           (("x", 2), ("y", 5), ("z", 3))}
  kernel = jnp.asarray(rng.normal(size=(10, 6)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=6), jnp.float32)
  got = concat_head_slices(kernel, bias, feats, order=("x", "y", "z"))
  full = jnp.concatenate([feats[m] for m in "xyz"], -1) @ kernel + bias
  np.testing.assert_allclose(sum(got.values()), full, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["y"], np.asarray(feats["y"]) @ np.asarray(kernel)[2:7]
                             + np.asarray(bias) / 3, rtol=1e-5, atol=1e-5)
  no_bias = concat_head_slices(kernel, None, feats)
  np.testing.assert_allclose(no_bias["x"], np.asarray(feats["x"]) @ np.asarray(kernel)[:2],
                             rtol=1e-5, atol=1e-5)


def test_errors(rng):
  feats = {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 4))}
  with pytest.raises(ValueError, match="concatenate to 7 inputs"):
    concat_head_slices(jnp.ones((6, 2)), None, feats)
  with pytest.raises(ValueError, match=r"no features for \['c'\]"):
    concat_head_slices(jnp.ones((7, 2)), None, feats, order=("a", "b", "c"))


def test_model_option_gives_head_slices(rng):
  model = mmreg.mlp_classifier({"a": 5, "b": 3}, 4, hidden=(6,), feature_dim=3,
                               modality_logits="head_slices")
  batch = {"a": jnp.asarray(rng.normal(size=(7, 5)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)}
  out = model(batch)
  w = np.asarray(model.head.kernel[...]).T
  b = np.asarray(model.head.bias[...])
  want_a, want_b = oracle_slices(np.asarray(out.features["a"]), np.asarray(out.features["b"]),
                                 w, b)
  np.testing.assert_allclose(out.modality_logits["a"], want_a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.modality_logits["b"], want_b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sum(out.modality_logits.values()), out.logits, rtol=1e-5,
                             atol=1e-5)
  default = mmreg.mlp_classifier({"a": 5, "b": 3}, 4, hidden=(6,), feature_dim=3)
  out = default(batch)
  np.testing.assert_allclose(out.modality_logits["a"],
                             default.aux_heads["a"](out.features["a"]), rtol=1e-6)


def test_model_option_errors():
  encoders = {m: SimpleNamespace(out_features=4) for m in "ab"}  # the checks come first
  build = functools.partial(mmreg.MultimodalClassifier, encoders, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="use fusion='concat', head='linear'"):
    build(fusion="sum", modality_logits="head_slices")
  with pytest.raises(ValueError, match="use fusion='concat', head='linear'"):
    build(head="etf", modality_logits="head_slices")
  with pytest.raises(ValueError, match="unknown modality_logits 'slices'"):
    build(modality_logits="slices")


def test_config_key_builds_head_slices():
  model = mmreg.models.build_model({"modality_logits": "head_slices", "hidden": (4,),
                                    "feature_dim": 3}, {"a": (5,), "b": (3,)}, 4, 0)
  assert model.modality_logits == "head_slices"
