"""The paper's progressive SIC configuration (official ProgSIC hyperparameters, SPEC §2 and §4).

Model: about 87.2M parameters (87,211,843 with the bottleneck quantiles).
Run:  python train.py --config configs/paper.py --workdir runs/paper \
        --config.data.train=/path/to/images
Expect: ~1M steps at global batch 16 (8 devices x 2) of 256x256 crops for the paper's curves.
"""

import ml_collections

from svi_jax.configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.base_config()
    m = config.model
    m.latent_channels = 512  # channels of y; 16 slices of 32
    m.num_slices = 16  # number of levels; level l transmits the first l slices
    m.analysis_dims = (256, 384, 512, 512)  # g_a embed dims per stage (stage 0 at H/2)
    m.analysis_depths = (1, 2, 2, 3)  # Swin blocks per g_a stage
    m.analysis_heads = (16, 16, 16, 16)  # attention heads per g_a stage
    m.synthesis_dims = (512, 512, 384, 256)  # g_s embed dims per stage (stage 0 at H/16)
    m.synthesis_depths = (3, 2, 2, 1)  # Swin blocks per g_s stage
    m.synthesis_heads = (16, 16, 16, 16)  # attention heads per g_s stage
    # bf16 compute on accelerators (GPU, TPU), float32 on CPU (XLA:CPU runs bf16 products
    # slower than float32); resolved from jax.default_backend() when the model is built
    m.dtype = "auto"
    m.precision = "default"  # float32 products may take the backend's fast path (TF32)
    config.data.batch_size = 16  # global batch: 8 devices x 2 (paper)
    config.data.crop_size = 256  # 256x256 random crops, no flips
    config.train.num_steps = 1_000_000  # main phase; warming ~2k steps at batch 8, GAN ~200k
    return config
