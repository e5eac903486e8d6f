"""A CPU-sized progressive SIC with the paper's structure (the reference "small config").

Same architecture as configs/paper.py, narrower: y has 64 channels in 16 slices of 4, g_a dims
(32, 48, 64, 64), g_s dims (64, 64, 48, 32); 1,435,467 parameters. It is the config of the
official reference data in ../shared/reference/sic_small_A.npz, the tests' model and the
embedded default of train.py / eval.py.
Run:  python train.py            (no flags: this config on scikit-image's bundled photos)
"""

import ml_collections

from configs import common


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
    return config
