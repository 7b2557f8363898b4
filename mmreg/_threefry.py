"""`jax.random.normal`'s float32 stream as one elementwise computation.

On CPU, JAX lowers its Threefry-2x32 hash to a rolled loop (jax/_src/random/threefry2x32.py,
`_threefry2x32_cpu_lowering_rule`) whose state, two uint32 arrays of the output's shape, XLA
must store: a draw of n floats holds 12·n bytes of temporaries and cannot fuse into its
consumer. `normal` writes the same hash unrolled (the lowering JAX uses on other backends) from
the same counters, so XLA fuses the whole draw into the expression that reads it. The values
are bit-for-bit those of `jax.random.normal` (tested against it); where that stream is not the
one described here (a key of another implementation, `jax_threefry_partitionable` off, a dtype
other than float32, 2^32 or more values) it calls `jax.random.normal` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
  return lax.shift_left(x, np.uint32(bits)) | lax.shift_right_logical(x, np.uint32(32 - bits))


def threefry2x32(key1: jax.Array, key2: jax.Array, count1: jax.Array, count2: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 with 20 rounds (Salmon et al., SC 2011), unrolled as in JAX's
  `_threefry2x32_lowering(..., use_rolled_loops=False)`: five groups of four rounds, each
  group followed by a key injection."""
  keys = (key1, key2, key1 ^ key2 ^ _KEY_PARITY)
  x1, x2 = count1 + keys[0], count2 + keys[1]
  for group in range(5):
    for rotation in _ROTATIONS[group % 2]:
      x1 = x1 + x2
      x2 = x1 ^ _rotate_left(x2, rotation)
    x1 = x1 + keys[(group + 1) % 3]
    x2 = x2 + keys[(group + 2) % 3] + np.uint32(group + 1)
  return x1, x2


def _threefry_key_data(key: jax.Array) -> jax.Array | None:
  """The key's two uint32 words when it draws from the Threefry-2x32 stream, else None."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key) if str(jax.random.key_impl(key)) == "threefry2x32" else None
  if key.dtype == jnp.uint32 and key.shape == (2,) and \
      jax.config.jax_default_prng_impl == "threefry2x32":
    return key
  return None


def normal(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32
           ) -> jax.Array:
  """Standard normal samples equal to `jax.random.normal(key, shape, dtype)`.

  As JAX with `jax_threefry_partitionable` (its default): the bits of element i (row-major)
  are h₁ ⊕ h₂ with (h₁, h₂) = Threefry(key, (0, i)); their top 23 bits make a float u in
  [1, 2), then u − 1 is mapped onto [nextafter(−1, 0), 1) and the sample is √2·erfinv(·)
  (jax/_src/random/core.py, `_uniform` and `_normal_real`)."""
  shape = tuple(shape)
  size = math.prod(shape)
  words = _threefry_key_data(key)
  if (words is None or not jax.config.jax_threefry_partitionable or not shape
      or jnp.dtype(dtype) != jnp.float32 or size >= 2 ** 32):
    return jax.random.normal(key, shape, dtype)
  count = lax.iota(np.uint32, size).reshape(shape)
  hash1, hash2 = threefry2x32(words[0], words[1], jnp.zeros(shape, np.uint32), count)
  mantissa = lax.shift_right_logical(hash1 ^ hash2, np.uint32(9)) | np.uint32(0x3F800000)
  unit = lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1.0)
  low_end = np.nextafter(np.float32(-1.0), np.float32(0.0))
  uniform = lax.max(low_end, unit * (np.float32(1.0) - low_end) + low_end)
  return np.float32(np.sqrt(2)) * lax.erf_inv(uniform)
