"""Graph size and memory by construction: deterministic proxies, no timings.

* The lowered tiny main training step stays small: a change that unrolls the Swin blocks of a
  stage or the 1 + M detail samples again grows its HLO past the bounds below and fails here.
* Backprop through the 1 + M decodes keeps one sample's activations: XLA's temporary-buffer
  estimate of the sample path barely grows from M = 1 to M = 4.
* XLA:CPU compiles identical fusions once, so the distinct kernels bound the work of its
  kernel compiler: the compiled tiny main step stays under a bound on them (slow: it compiles).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import svi_jax
from svi_jax.configs import tiny
from svi_jax.forward import decode_samples
from svi_jax.graph_size import (
    HLO_BOOKKEEPING,
    abstract,
    fusion_counts,
    hlo_compute_instruction_count,
    hlo_instruction_count,
    hlo_opcodes,
)
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.swin import SwinBlock, swin_blocks
from svi_jax.training import steps

# Compute instructions of the lowered tiny main step (jax 0.10.2): 9,806 with the closed-form
# LayerNorm gradient and erf GELU (svi_jax/nn/layers.py); 13,659 before them, 18,386 before
# optax.flatten, 22,071 for the unrolled graph of commit 5950ceb. The bound is half the
# unrolled graph (issue 9's target), 12.5% above the measurement. Dots and convolutions: 401.
MAX_STEP_COMPUTE_INSTRUCTIONS = 22_071 // 2
MAX_STEP_MATMULS = 480
# Distinct fusions of the compiled tiny main step (XLA:CPU, jax 0.10.2): 1,221 (3,101 in all);
# 1,280 (3,274) with Flax's LayerNorm and jax's erfc GELU; 1,392 (3,651) with a per-leaf
# gradient norm. Bound +20%.
MAX_STEP_DISTINCT_KERNELS = 1_465
_ops = hlo_opcodes  # benchmarks/compile.py's hlo_compute column counts the same way


def test_instruction_counter_counts_every_instruction():
    text = jax.jit(lambda a: jnp.sin(a) * 2 + 1).trace(jnp.ones(3)).lower().as_text("hlo")
    assert hlo_instruction_count(text) == len(_ops(text)) >= 4  # param, sin, mul, add (+consts)


def test_fusion_counts_counts_identical_fusions_once():
    def chains(*xs):
        return [jnp.sum((jnp.tanh(x) * 3.0 + jnp.sin(x)) ** 2, axis=-1) for x in xs]

    def counts(shapes):
        args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
        return fusion_counts(jax.jit(chains).trace(*args).lower().compile().as_text())

    same, distinct = counts([(8, 5)] * 6), counts([(8, 5 + i) for i in range(6)])
    # one kernel body per chain; six chains of one shape share it, six shapes do not
    assert same[0] == distinct[0] and same[0] % 6 == 0 and same[0] > 0
    assert same[1] == same[0] // 6 and distinct[1] == distinct[0]


@pytest.fixture(scope="module")
def tiny_main_step_lowered():
    config = tiny.get_config()
    config.phase = "main"
    model = svi_jax.build_model(config.model)
    state = jax.eval_shape(lambda: steps.init_state(config, model, jax.random.PRNGKey(0)))
    step = jax.jit(steps.make_step_fn(config, model, load_lpips_params("alex")))
    size = config.data.crop_size
    batch = jax.ShapeDtypeStruct((config.data.batch_size, size, size, 3), jnp.float32)
    return step.trace(state, batch).lower()


@pytest.fixture(scope="module")
def tiny_main_step_hlo(tiny_main_step_lowered):
    return tiny_main_step_lowered.as_text(dialect="hlo")


def test_tiny_main_step_graph_is_small(tiny_main_step_hlo):
    ops = _ops(tiny_main_step_hlo)
    compute = hlo_compute_instruction_count(tiny_main_step_hlo)
    assert compute == sum(op not in HLO_BOOKKEEPING for op in ops) < len(ops)
    matmuls = [op for op in ops if op in ("dot", "convolution")]
    assert compute <= MAX_STEP_COMPUTE_INSTRUCTIONS, compute
    assert len(matmuls) <= MAX_STEP_MATMULS, len(matmuls)


@pytest.mark.slow
def test_tiny_main_step_compiles_few_distinct_kernels(tiny_main_step_lowered):
    if jax.default_backend() != "cpu":
        pytest.skip("the bound is XLA:CPU's")
    total, distinct = fusion_counts(tiny_main_step_lowered.compile().as_text())
    assert distinct <= MAX_STEP_DISTINCT_KERNELS, (distinct, total)


def _sample_path_temp_bytes(num_samples: int) -> int:
    """XLA's temporary bytes of d/dparams of the 1 + M decodes and re-encodes (tiny, 64x64)."""
    model = svi_jax.build_model(tiny.get_config().model)
    params = jax.eval_shape(lambda: svi_jax.init_params(model, jax.random.PRNGKey(0)))
    k, c = 1 + num_samples, model.latent_channels
    y_hat = jax.ShapeDtypeStruct((2, 4, 4, c), jnp.float32)
    stacked = jax.ShapeDtypeStruct((k, 2, 4, 4, c), jnp.float32)

    def loss(p, y, latents, sampled):
        out = decode_samples(model, p, y, latents, sampled, jnp.full((k,), 8))
        return jnp.sum(out.x_hat**2) + jnp.sum(out.synonym) + jnp.sum(out.sample)

    compiled = jax.jit(jax.grad(loss)).trace(params, y_hat, stacked, stacked).lower().compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_sample_path_memory_does_not_grow_with_m():
    one, four = _sample_path_temp_bytes(1), _sample_path_temp_bytes(4)
    # Batched without rematerialisation (commit 5950ceb) the activations of all 1 + M samples
    # are live in backprop: train_forward's temp bytes grew 2.2x from M = 1 to 4. Scanned and
    # rematerialised: one sample's, plus the (K, B, H, W, 3) images and the stacked inputs
    # (measured: 1.002x).
    assert four < 1.25 * one, (one, four)


def test_scanned_stage_equals_unrolled_blocks():
    """The scanned stage (traced shift flag) computes exactly the unrolled official blocks
    (static shifts 0, 4, 0) with each block's slice of the stacked parameters."""
    import flax.linen as nn

    class Stage(nn.Module):
        @nn.compact
        def __call__(self, x):
            return swin_blocks(x, 3, 4, 8, (32, 32), 4.0, name="blocks")

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 20, 32))  # padded to 16x24
    params = Stage().init(jax.random.PRNGKey(1), x)
    scanned = Stage().apply(params, x)
    stacked = params["params"]["blocks"]
    y = x
    for j in range(3):
        block = SwinBlock(num_heads=4, window=8, shift=4 * (j % 2))
        p_j = jax.tree_util.tree_map(lambda a, j=j: a[j], stacked)
        y = block.apply({"params": p_j}, y)
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(y), rtol=1e-6, atol=1e-6)
    assert abstract(stacked)["attn"]["qkv"]["kernel"].shape == (3, 32, 96)
