"""The paper's progressive SIC (official ProgSIC hyperparameters, docs/MODEL.md §2 and §4).

Model: about 87.2M parameters (87,211,843 with the bottleneck quantiles).

The three-phase recipe, as the official code trains it (each phase in its own workdir, each
started from the previous one's export; re-running a command resumes it):

  python train.py --config configs/paper.py --workdir runs/paper/warming \
      --config.phase=warming --config.data.batch_size=8 --config.train.num_steps=2000 \
      --config.data.train=/data/train --config.data.val=/data/val
  python train.py --config configs/paper.py --workdir runs/paper/main --config.phase=main \
      --config.train.init_from=runs/paper/warming \
      --config.data.train=/data/train --config.data.val=/data/val
  python train.py --config configs/paper.py --workdir runs/paper/gan --config.phase=gan \
      --config.train.init_from=runs/paper/main --config.train.num_steps=200000 \
      --config.data.train=/data/train --config.data.val=/data/val
  python eval.py --checkpoint runs/paper/gan --data /data/kodak --out runs/paper/eval_kodak

Hardware and time: the paper trains at global batch 16 (8 GPUs x 2) on 256x256 crops for about
1M main steps. The official PyTorch step (batch 2, M = 5) takes 0.283 s on one H200, so the
main phase is about 3.3 days on 8 such GPUs at the official speed (benchmarks/train_step.py
prints ours beside it). On a 2-core CPU one step takes about a minute (a smoke test only).
Precision: bfloat16 compute on GPU/TPU and float32 on CPU (`model.dtype = "auto"`);
rematerialised Swin blocks on CPU only (`model.remat = "auto"`).
Expected results: the paper reports its rate-distortion-perception curves (bpp vs PSNR,
MS-SSIM, LPIPS, DISTS, FID, KID on Kodak, CLIC2020 and DIV2K) as figures, not tables, and no
numbers read off a plot are shipped. baselines/README.md gives the commands that evaluate the
official checkpoint with this protocol into a baseline that `eval.py --compare` draws beside a
run of yours; baselines/demo.json is the measured curve of the embedded demo.
"""

import ml_collections

from svi_jax.configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.base_config()
    model = config.model
    model.latent_channels = 512  # channels of y; 16 slices of 32
    model.num_slices = 16  # number of levels; level l transmits the first l slices
    model.analysis_dims = (256, 384, 512, 512)  # g_a embed dims per stage (stage 0 at H/2)
    model.analysis_depths = (1, 2, 2, 3)  # Swin blocks per g_a stage
    model.analysis_heads = (16, 16, 16, 16)  # attention heads per g_a stage
    model.synthesis_dims = (512, 512, 384, 256)  # g_s embed dims per stage (stage 0 at H/16)
    model.synthesis_depths = (3, 2, 2, 1)  # Swin blocks per g_s stage
    model.synthesis_heads = (16, 16, 16, 16)  # attention heads per g_s stage
    # bf16 compute on accelerators (GPU, TPU), float32 on CPU (XLA:CPU runs bf16 products
    # slower than float32); resolved from jax.default_backend() when the model is built
    model.dtype = "auto"
    with model.ignore_type():  # True | False | "auto" (on for CPU only: paper step 10.3 GiB there)
        model.remat = "auto"
    model.precision = "default"  # float32 products may take the backend's fast path (TF32)
    config.data.batch_size = 16  # global batch: 8 devices x 2 (paper)
    config.data.crop_size = 256  # 256x256 random crops, no flips
    config.train.num_steps = 1_000_000  # main phase; warming ~2k steps at batch 8, GAN ~200k
    return config
