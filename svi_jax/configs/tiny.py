"""A CPU-sized progressive SIC with the paper's structure (the reference "small config").

Same architecture as configs/paper.py, narrower: y has 64 channels in 16 slices of 4, g_a dims
(32, 48, 64, 64), g_s dims (64, 64, 48, 32); 1,435,467 parameters. It is the config of the
official reference data in ../shared/reference/sic_small_A.npz, the tests' model and the
embedded default of train.py / eval.py.
Run:  python train.py            (no flags: this config on scikit-image's bundled photos)
Does: main phase, 200 steps of 64x64 crops, global batch 2, M = 1, in runs/tiny; writes
  runs/tiny/{checkpoints,tensorboard,metrics.jsonl,images,export} and prints, e.g.
  "step 200: val loss 84.27 | bpp@1/8/16 0.168/0.874/1.666 | PSNR@1/8/16 10.90/12.30/12.54 dB".
Runtime (2 shared CPU cores, load ~6): ~1.5 min setup + ~2 min compile, then 0.65-1.4 s/step;
  9 min wall in all, 3.2 CPU-minutes of user time (less on an idle machine).
"""

import ml_collections

from svi_jax.configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.base_config()
    m = config.model
    m.latent_channels = 64  # channels of y; 16 slices of 4
    m.num_slices = 16  # number of levels
    m.analysis_dims = (32, 48, 64, 64)  # g_a embed dims per stage
    m.analysis_depths = (1, 2, 2, 3)  # Swin blocks per g_a stage
    m.analysis_heads = (16, 16, 16, 16)  # heads per g_a stage (head dim 2..4, as the reference)
    m.synthesis_dims = (64, 64, 48, 32)  # g_s embed dims per stage
    m.synthesis_depths = (3, 2, 2, 1)  # Swin blocks per g_s stage
    m.synthesis_heads = (16, 16, 16, 16)  # heads per g_s stage

    # Embedded default (python train.py): a few minutes on a 2-core CPU (see the docstring).
    config.loss.num_samples = 1  # M: one detail sample keeps a CPU step about 1 s
    d = config.data
    d.batch_size = 2  # global batch
    d.crop_size = 64  # smallest valid crop (y is 4x4, z is 1x1): ~1 s/step on 2 cores
    d.val_crop = 128  # center crop of the held-out photo (astronaut)
    t = config.train
    t.num_steps = 200  # 12.5 cycles of the 16 levels
    t.log_every = 10  # steps between scalar logs
    t.checkpoint_every = 50  # steps between checkpoints
    t.eval_every = 100  # steps between validations (16 levels, 1 image)
    t.image_every = 100  # steps between PNG grids
    return config
