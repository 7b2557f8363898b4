"""`mmreg._threefry.normal` reproduces `jax.random.normal` bit for bit, as one fusable draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmreg._threefry import normal, threefry2x32

# Known-answer vectors of Threefry-2x32, 20 rounds (Random123's kat_vectors; the same three
# cases are in JAX's tests/random_test.py, testThreefry2x32).
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize(("key", "count", "expected"), KNOWN_ANSWERS)
def test_threefry_known_answers(key, count, expected):
  out = threefry2x32(*(jnp.uint32(v) for v in (*key, *count)))
  assert tuple(int(v) for v in out) == expected


def _same_bits(a: jax.Array, b: jax.Array) -> bool:
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint32),
                                                                      b.view(np.uint32))


@pytest.mark.parametrize(("shape", "seed"), [((1,), 0), ((7,), 11), ((5, 3), 2 ** 31 + 5),
                                             ((64, 129), 0), ((2, 3, 5, 1), 11)])
def test_normal_equals_jax_random_normal_bit_for_bit(shape, seed):
  key = jax.random.PRNGKey(seed)
  expected = jax.jit(lambda k: jax.random.normal(k, shape))(key)
  assert _same_bits(jax.jit(lambda k: normal(k, shape))(key), expected)
  assert _same_bits(normal(key, shape), expected)


def test_normal_with_typed_keys_and_under_vmap():
  keys = jax.random.split(jax.random.key(4), 3)
  draw = jax.jit(jax.vmap(lambda k: normal(k, (6, 4))))
  assert _same_bits(draw(keys), jax.vmap(lambda k: jax.random.normal(k, (6, 4)))(keys))
  raw = jax.random.split(jax.random.PRNGKey(4), 3)
  assert _same_bits(jax.vmap(lambda k: normal(k, (9,)))(raw),
                    jax.vmap(lambda k: jax.random.normal(k, (9,)))(raw))


def test_other_streams_are_drawn_by_jax():
  rbg = jax.random.key(1, impl="rbg")
  assert _same_bits(normal(rbg, (4, 3)), jax.random.normal(rbg, (4, 3)))
  key = jax.random.PRNGKey(2)
  with jax.threefry_partitionable(False):
    assert _same_bits(normal(key, (5, 2)), jax.random.normal(key, (5, 2)))
  half = normal(key, (8,), jnp.float16)
  np.testing.assert_array_equal(np.asarray(half), np.asarray(jax.random.normal(key, (8,),
                                                                               jnp.float16)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the temporaries measured are CPU's")
def test_noise_fuses_into_its_consumer():
  x = jnp.zeros((256, 512), jnp.float32)
  compiled = jax.jit(lambda k, v: v + 0.03 * normal(k, v.shape)).lower(
      jax.random.PRNGKey(0), x).compile()
  assert compiled.memory_analysis().temp_size_in_bytes == 0
