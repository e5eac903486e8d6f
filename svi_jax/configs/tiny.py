"""A CPU-sized progressive SIC with the paper's structure (the reference "small config").

Same architecture as configs/paper.py, narrower: y has 64 channels in 16 slices of 4, g_a dims
(32, 48, 64, 64), g_s dims (64, 64, 48, 32); 1,435,467 parameters. It is the config of the
official reference data in ../shared/reference/sic_small_A.npz and the tests' model; the
embedded default (configs/demo.py) trains this model, with fewer heads, on a recipe that
learns on a CPU.
Run:  python train.py --config configs/tiny.py   (main phase only, the fields below)
Does: main phase, 200 steps of 64x64 crops, global batch 2, M = 1, official init and
  learning rate: the decoder collapses to a flat mean-colour image (PSNR ~12.4 dB at every
  level); kept as the small official-recipe baseline and the machinery tests' config.
"""

import ml_collections

from svi_jax.configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.base_config()
    model = config.model
    model.latent_channels = 64  # channels of y; 16 slices of 4
    model.num_slices = 16  # number of levels
    model.analysis_dims = (32, 48, 64, 64)  # g_a embed dims per stage
    model.analysis_depths = (1, 2, 2, 3)  # Swin blocks per g_a stage
    model.analysis_heads = (16, 16, 16, 16)  # heads per g_a stage (head dim 2..4, as the reference)
    model.synthesis_dims = (64, 64, 48, 32)  # g_s embed dims per stage
    model.synthesis_depths = (3, 2, 2, 1)  # Swin blocks per g_s stage
    model.synthesis_heads = (16, 16, 16, 16)  # heads per g_s stage

    # Embedded default (python train.py): a few minutes on a 2-core CPU (see the docstring).
    config.loss.num_samples = 1  # M: one detail sample keeps a CPU step about 1 s
    data = config.data
    data.batch_size = 2  # global batch
    data.crop_size = 64  # smallest valid crop (y is 4x4, z is 1x1): ~1 s/step on 2 cores
    data.val_crop = 128  # center crop of the held-out photo (astronaut)
    train = config.train
    train.num_steps = 200  # 12.5 cycles of the 16 levels
    train.log_every = 10  # steps between scalar logs
    train.checkpoint_every = 50  # steps between checkpoints
    train.eval_every = 100  # steps between validations (16 levels, 1 image)
    train.image_every = 100  # steps between PNG grids
    return config
