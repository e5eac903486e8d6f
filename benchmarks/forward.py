"""Benchmark: one SVI training forward+backward of a config (default: the paper's).

Prints compile time, steady-state seconds per forward+backward, XLA's memory estimate for the
compiled step and the process's peak resident memory. Default: configs/paper.py, batch 2,
256x256, M = 5 (the official training step). Example:

    python benchmarks/forward.py                       # paper config, as the issue asks
    python benchmarks/forward.py --config tiny --remat  # quick check, remat on
    python benchmarks/forward.py --remat off            # paper config without remat

--remat and --chunk default to the config's settings (paper: remat "auto", on for CPU only);
the line "remat=..." prints what was used.
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp

import svi_jax
from svi_jax.configs import load_config_or_exit
from svi_jax.metrics.lpips import load_lpips_params

REMAT = {"on": True, "off": False, "auto": "auto"}  # --remat value -> model.remat


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--config",
        default="paper",
        help="config name (tiny, paper, demo) or path (configs/tiny.py)",
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=5, help="M detail samples")
    ap.add_argument("--level", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steady-state steps")
    ap.add_argument(
        "--remat",
        nargs="?",
        const="on",
        choices=REMAT,
        help="rematerialise Swin blocks: on (also plain --remat), off, or auto (CPU only); "
        "default: the config's model.remat (paper: auto)",
    )
    ap.add_argument(
        "--chunk",
        type=int,
        help="attention windows per chunk (0: all); default: the config's attention_chunk_windows",
    )
    ap.add_argument("--compile-only", action="store_true", help="report XLA's memory estimate only")
    return ap


def configure(argv=None):
    """(parsed flags, config) with --remat / --chunk applied only when given."""
    ap = build_parser()
    args = ap.parse_args(argv)
    cfg = load_config_or_exit(ap, args.config)
    if args.remat is not None:  # else the config's own setting (paper.py: "auto")
        with cfg.model.ignore_type():  # a bool or "auto", whichever type the config holds
            cfg.model.remat = REMAT[args.remat]
    if args.chunk is not None:
        cfg.model.attention_chunk_windows = args.chunk
    return args, cfg


def main() -> None:
    args, cfg = configure()
    model = svi_jax.build_model(cfg.model)
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))  # eager: nothing per parameter
    lpips_params = load_lpips_params("alex")
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, args.size, args.size, 3))
    noise = svi_jax.draw_train_noise(model, jax.random.PRNGKey(2), x.shape, args.samples)
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))

    def loss_fn(p, level):
        return svi_jax.svi_loss(model, p, lpips_params, x, level, noise, cfg.loss)[0]

    step = jax.jit(jax.value_and_grad(loss_fn))
    level = jnp.int32(args.level)
    t0 = time.perf_counter()
    compiled = step.lower(params, level).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    if args.compile_only:
        args.steps = 0
    else:
        jax.block_until_ready(compiled(params, level))  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, level))
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB

    print(f"config={args.config} params={n_params / 1e6:.2f}M device={jax.devices()[0]}")
    print(
        f"batch={args.batch} size={args.size} M={args.samples} "
        f"remat={model.remat} (config: {cfg.model.remat!r}) "
        f"attention_chunk_windows={model.attention_chunk_windows}"
    )
    print(f"compile_s={compile_s:.1f}")
    if times:
        print(f"step_s_median={sorted(times)[len(times) // 2]:.3f} (min {min(times):.3f})")
    if mem is not None:
        gib = 2**30
        print(
            f"xla_temp_GiB={mem.temp_size_in_bytes / gib:.2f} "
            f"xla_args_GiB={mem.argument_size_in_bytes / gib:.2f} "
            f"xla_out_GiB={mem.output_size_in_bytes / gib:.2f}"
        )
    print(f"peak_rss_GiB={peak_rss:.2f}")


if __name__ == "__main__":
    main()
