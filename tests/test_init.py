"""A fresh model draws its parameters from the official (PyTorch) distributions.

The fans are derived here from the PyTorch weight layout, independently of the
`variance_scaling` axes the layers use: a Conv2d weight is (out, in/groups, k, k), a
ConvTranspose2d weight is (in, out, k, k); torch takes fan_in = size(1)·k·k and
fan_out = size(0)·k·k of either (torch.nn.init._calculate_fan_in_and_fan_out).
- default Conv init (context model, entropy parameters, patch embedding, output conv):
  weights and biases U(±1/sqrt(fan_in));
- the hyperprior's kaiming_normal_(mode="fan_out"): N(0, gain/sqrt(fan_out)), gain sqrt(2)
  before a (Leaky)ReLU and 1 on the last layer (official hyperprior in the SIC code).
"""

from __future__ import annotations

import dataclasses
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svi_jax.configs import tiny
from svi_jax.nn import initializers
from svi_jax.nn import model as svi_jax_model
from svi_jax.nn.model import build_model, flax_init_params, init_params

MIN_SIZE_FOR_STD = 500  # leaves this large estimate their std within ~5% (3 sigma)
STD_TOLERANCE = 0.10
MAX_EAGER_COMPILES = 6  # programs a cold eager init_params compiles (measured: see the test)
MAX_DRAW_KERNELS = 30  # XLA:CPU distinct fusions of the two flat draws: 25 measured (jax 0.10.2)


@pytest.fixture(scope="module")
def params() -> dict:
    model = build_model(tiny.get_config().model)
    return jax.device_get(init_params(model, jax.random.key(3)))


def torch_fans(kernel: np.ndarray, transposed: bool) -> tuple[int, int]:
    """(fan_in, fan_out) of the PyTorch weight that the HWIO `kernel` transposes to."""
    kh, kw, a, b = kernel.shape
    torch_shape = (a, b, kh, kw) if transposed else (b, a, kh, kw)
    receptive = kh * kw
    return torch_shape[1] * receptive, torch_shape[0] * receptive


def check_std(values: np.ndarray, expected: float, what: str) -> None:
    if values.size >= MIN_SIZE_FOR_STD:
        ratio = float(np.std(values)) / expected
        assert abs(ratio - 1) < STD_TOLERANCE, f"{what}: std {ratio:.3f} x expected"


DEFAULT_INIT = [
    ("context_model",),
    ("entropy_parameters", "conv_0"),
    ("entropy_parameters", "conv_2"),
    ("entropy_parameters", "conv_4"),
    ("ga", "patch_embed", "proj"),
    ("gs", "outconv"),
]


@pytest.mark.parametrize("path", DEFAULT_INIT, ids="/".join)
def test_default_conv_init_is_torch_uniform_over_fan_in(params, path):
    layer = params
    for key in path:
        layer = layer[key]
    fan_in, _ = torch_fans(layer["kernel"], transposed=False)
    bound = 1 / math.sqrt(fan_in)
    for name in ("kernel", "bias"):
        values = np.asarray(layer[name])
        assert np.max(np.abs(values)) <= bound * (1 + 1e-6), f"{path} {name} exceeds U bound"
        if values.size >= 32:  # P(max |U| < 0.8 bound) = 0.8**n
            assert np.max(np.abs(values)) > 0.8 * bound, f"{path} {name} far inside its U bound"
        check_std(values, bound / math.sqrt(3), f"{path} {name}")


HYPERPRIOR = [
    ("ha", "conv_0", False, math.sqrt(2)),
    ("ha", "conv_2", False, math.sqrt(2)),
    ("ha", "conv_4", False, 1.0),
    ("hs", "deconv_0", True, math.sqrt(2)),
    ("hs", "deconv_2", True, math.sqrt(2)),
    ("hs", "deconv_4", True, 1.0),
]


@pytest.mark.parametrize("module,name,transposed,gain", HYPERPRIOR, ids=lambda v: str(v))
def test_hyperprior_init_is_kaiming_normal_over_fan_out(params, module, name, transposed, gain):
    layer = params[module][name]
    kernel = np.asarray(layer["kernel"])
    fan_in, fan_out = torch_fans(kernel, transposed)
    check_std(kernel, gain / math.sqrt(fan_out), f"{module}/{name} kernel")
    assert abs(float(np.mean(kernel))) < 3 * gain / math.sqrt(fan_out) / math.sqrt(kernel.size)
    # biases keep torch's default init (only the weights take kaiming_normal_)
    bias = np.asarray(layer["bias"])
    assert np.max(np.abs(bias)) <= (1 + 1e-6) / math.sqrt(fan_in), f"{module}/{name} bias"


# --- init_params (flat draws from each parameter's law) against Flax's own model.init -------


@pytest.fixture(scope="module")
def flax_params() -> dict:
    model = build_model(tiny.get_config().model)
    return jax.device_get(flax_init_params(model, jax.random.key(3)))


def test_every_parameter_has_the_law_flax_init_draws(params, flax_params):
    """Same tree, shapes and dtypes as model.init; constants equal; random leaves within the
    same bounds with the same spread (a leaf drawn from another law, or two leaves swapped,
    fails here: LayerNorm scale/bias and EntropyBottleneck bias/factor share their shapes)."""
    ours = jax.tree_util.tree_flatten_with_path(params)[0]
    theirs = jax.tree_util.tree_leaves(flax_params)
    assert jax.tree.structure(params) == jax.tree.structure(flax_params)
    for (path, a), b in zip(ours, theirs, strict=True):
        name = jax.tree_util.keystr(path)
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if np.all(b == b.flat[0]) or name.endswith("['quantiles']"):
            np.testing.assert_array_equal(a, b, err_msg=name)
            continue
        assert not np.array_equal(a, b), f"{name}: the same values as Flax's draw"
        bound = np.max(np.abs(b))
        assert np.max(np.abs(a)) <= 1.5 * bound, name  # uniform: both <= its bound
        if a.size >= MIN_SIZE_FOR_STD:
            assert abs(np.std(a) / np.std(b) - 1) < 2 * STD_TOLERANCE, name


def test_every_recorded_law_is_what_both_draws_follow(params, flax_params):
    """Leaf by leaf, the law init_params read (its plan) bounds both its own draw and Flax's:
    a uniform leaf of >= 32 values reaches past 80% of its bound and never beyond it (a bias
    cut with another layer's fan_in fails, whatever its size); a normal leaf of >= 500 values
    has the law's spread; a Normal's clip holds."""
    plan = svi_jax_model._plan(build_model(tiny.get_config().model), 64)
    ours = jax.tree.leaves(params)
    theirs = jax.tree.leaves(flax_params)
    assert len(plan.leaves) == len(ours) == len(theirs)
    for (shape, _, law, _), a, b in zip(plan.leaves, ours, theirs, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == tuple(shape)
        if isinstance(law, initializers.Uniform):
            for values in (a, b):
                assert np.max(np.abs(values)) <= law.bound * (1 + 1e-6), (law, shape)
                if values.size >= 32:
                    assert np.max(np.abs(values)) > 0.8 * law.bound, (law, shape)
        elif isinstance(law, initializers.Normal):
            for values in (a, b):
                if law.clip is not None:
                    assert np.max(np.abs(values)) <= law.clip, (law, shape)
                check_std(values, law.std, f"{law} {shape}")


def test_init_params_gives_the_same_values_inside_jit(params):
    model = build_model(tiny.get_config().model)
    jitted = jax.jit(lambda k: init_params(model, k))(jax.random.key(3))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = init_params(model, jax.random.key(4))
    assert not np.array_equal(params["gs"]["outconv"]["kernel"], other["gs"]["outconv"]["kernel"])


def test_an_initializer_without_a_law_is_named():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(4, kernel_init=initializers.Normal(0.02), name="ours")(x)
            return nn.Dense(4, name="flax_default")(x)  # lecun_normal: no law

    with pytest.raises(TypeError, match="flax_default.*kernel"):
        initializers.plan_of(
            lambda k: Mixed().init(k, jnp.zeros((1, 3)))["params"], jax.random.key(0)
        )


def test_variance_scaling_keeps_jax_values_and_names_its_law():
    shape = (3, 3, 8, 16)
    ours = initializers.VarianceScaling(2.0, "fan_out", "normal")
    theirs = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    key = jax.random.key(0)
    np.testing.assert_array_equal(ours(key, shape), theirs(key, shape))
    assert ours.law(shape).std == pytest.approx(math.sqrt(2.0 / (3 * 3 * 16)), rel=1e-12)
    law = initializers.VarianceScaling(1 / 3, "fan_in", "uniform").law(shape)
    assert isinstance(law, initializers.Uniform)
    assert law.bound == pytest.approx(1 / math.sqrt(3 * 3 * 8), rel=1e-12)


def test_init_params_compiles_one_small_program_whatever_the_model():
    """A cold eager init_params compiles the same few programs for the tiny and the paper model
    (the flat draws, a key split): nothing per parameter. Counted from jax's own compile
    events in a fresh interpreter (Flax's jitted model.init compiled 373 distinct kernels for
    the paper model, 9.5 s on 2 idle cores)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import jax
        from svi_jax.configs import paper, tiny
        from svi_jax.nn.model import build_model, init_params
        compiles = []
        jax.monitoring.register_event_duration_secs_listener(
            lambda event, seconds, **kw: compiles.append(event)
            if event == "/jax/core/compile/backend_compile_duration" else None
        )
        counts = []
        for config in (tiny, paper):
            model = build_model(config.get_config().model)
            before = len(compiles)
            jax.block_until_ready(init_params(model, jax.random.PRNGKey(0)))
            counts.append(len(compiles) - before)
        print(*counts)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tiny_count, paper_count = map(int, done.stdout.split())
    # tiny compiles the key split too, paper only its own flat draws (other vector lengths)
    assert 1 <= paper_count <= tiny_count <= MAX_EAGER_COMPILES, (tiny_count, paper_count)


def test_the_flat_draws_are_one_small_program():
    from svi_jax.configs import paper
    from svi_jax.graph_size import fusion_counts

    key = jax.random.key_data(jax.random.PRNGKey(0))
    counts = []
    for config in (tiny, paper):
        plan = svi_jax_model._plan(build_model(config.get_config().model), 64)
        lowered = initializers._flat_draws.lower(key, plan.n_uniform, plan.n_normal)
        counts.append(fusion_counts(lowered.compile().as_text())[1])
    assert counts[0] == counts[1] and counts[0] <= MAX_DRAW_KERNELS, counts


def test_recording_ends_with_the_draw():
    """init_params reads the laws under a recording switch; model.init afterwards (and on
    other threads) returns plain arrays, never the recording's boxes; and reading the laws of
    a function jax has already traced does not reuse that trace."""
    import threading

    model = build_model(tiny.get_config().model)
    init = lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)))["params"]

    def leaves(tree):  # a box is a pytree node: stop at anything that is not a dict
        return jax.tree.leaves(tree, is_leaf=lambda x: not isinstance(x, dict))

    key = jax.random.key(0)
    init_params(model, jax.random.key(5))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves(jax.eval_shape(init, key)))
    plan = initializers.plan_of(init, key)  # the same function, traced above without recording
    assert len(plan.leaves) == len(leaves(jax.eval_shape(init, key)))
    seen = []
    with initializers._recording():
        worker = threading.Thread(
            target=lambda: seen.extend(leaves(jax.eval_shape(lambda k: init(k), key)))
        )
        worker.start()
        worker.join()
    assert seen and all(isinstance(x, jax.ShapeDtypeStruct) for x in seen)


def test_eager_parameters_land_where_the_key_is():
    """As jit would place them: with a key committed to device 1 on device 1, with a replicated
    key replicated, with an uncommitted key on the default device (2 forced CPU devices)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from svi_jax.configs import tiny
        from svi_jax.nn.model import build_model, init_params
        model = build_model(tiny.get_config().model)
        first = lambda key: jax.tree.leaves(init_params(model, key))[0]
        on_1 = first(jax.device_put(jax.random.PRNGKey(0), jax.devices()[1]))
        assert on_1.devices() == {jax.devices()[1]}, on_1.devices()
        mesh = Mesh(np.array(jax.devices()), ("d",))
        both = first(jax.device_put(jax.random.key(0), NamedSharding(mesh, P())))
        assert both.devices() == set(jax.devices()) and both.sharding.is_fully_replicated
        plain = first(jax.random.PRNGKey(0))
        assert plain.devices() == {jax.devices()[0]} and not plain.committed
        np.testing.assert_array_equal(on_1, plain)
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_init_params_traces_with_a_closed_over_key_and_under_vmap(params):
    """A key closed over by the traced function is concrete inside the trace: the draw must
    still take the traced path (eval_shape templates are built this way)."""
    model = build_model(tiny.get_config().model)
    key = jax.random.key(3)
    shapes = jax.eval_shape(lambda: init_params(model, key))
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(
        lambda a: (a.shape, a.dtype), params
    )
    closed = jax.jit(lambda: init_params(model, key))()
    np.testing.assert_array_equal(
        closed["gs"]["outconv"]["kernel"], params["gs"]["outconv"]["kernel"]
    )
    keys = jax.random.split(jax.random.key(7), 2)
    ensemble = jax.vmap(lambda k: init_params(model, k))(keys)
    second = init_params(model, keys[1])
    np.testing.assert_array_equal(
        ensemble["ha"]["conv_0"]["kernel"][1], second["ha"]["conv_0"]["kernel"]
    )


@pytest.mark.parametrize(
    "rng,size,kind,error",
    [
        (0, 64, TypeError, "needs one JAX PRNG key"),
        (jax.random.PRNGKey(0).astype(jnp.float32), 64, TypeError, "needs one JAX PRNG key"),
        (jax.numpy.zeros(4, jnp.uint32), 64, TypeError, "needs one JAX PRNG key"),  # rbg data
        (jax.random.split(jax.random.key(0), 2), 64, TypeError, "needs one JAX PRNG key"),
        (jax.random.PRNGKey(0), 65, ValueError, "positive multiple of 64"),
        (jax.random.PRNGKey(0), 0, ValueError, "positive multiple of 64"),
        (jax.random.PRNGKey(0), 64.0, TypeError, "must be a Python int"),
    ],
)
def test_init_params_refuses_bad_arguments_in_one_line(rng, size, kind, error):
    model = build_model(tiny.get_config().model)
    with pytest.raises(kind, match=error) as raised:
        init_params(model, rng, image_size=size)
    assert "\n" not in str(raised.value)


def test_a_model_with_list_fields_initialises():
    config = tiny.get_config().model
    model = build_model(config)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    fields = {k: v for k, v in fields.items() if k not in ("parent", "name")}
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    listed = svi_jax_model.ProgressiveSIC(**fields)
    with pytest.raises(TypeError):
        hash(listed)
    got = init_params(listed, jax.random.key(3))
    want = init_params(build_model(config), jax.random.key(3))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_loops_eager_parameters_are_the_jitted_states(tmp_path):
    """train.py draws the initial parameters eagerly (steps.initial_params) and jits the rest:
    the same parameters as jit(init_state) draws inside, with the demo's output-bias init."""
    from svi_jax.configs import demo
    from svi_jax.training import steps

    config = demo.get_config()
    assert float(config.train.output_bias_init) >= 0  # the branch under test
    model = build_model(config.model)
    rng = jax.random.PRNGKey(int(config.seed))
    eager = steps.initial_params(config, model, rng)
    jitted = jax.jit(lambda: steps.init_state(config, model, rng))()["params"]
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    bias = np.asarray(eager["gs"]["outconv"]["bias"])
    assert np.all(bias == np.float32(config.train.output_bias_init))


def test_a_subclassed_law_takes_its_own_slice():
    """plan_of picks the flat vector by isinstance, as the cut does: two leaves of a Uniform
    subclass get different values (they shared the first uniform leaf's)."""

    @dataclasses.dataclass(frozen=True)
    class Wide(initializers.Uniform):
        pass

    class Two(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = self.param("a", Wide(1.0), (64,))
            b = self.param("b", Wide(1.0), (128,))
            return x + a.sum() + b.sum()

    plan = initializers.plan_of(lambda k: Two().init(k, jnp.zeros(()))["params"], jax.random.key(0))
    assert plan.n_uniform == 64 + 128
    drawn = initializers.draw_params(plan, jax.random.key(1))
    assert not np.array_equal(np.asarray(drawn["a"]), np.asarray(drawn["b"])[:64])
