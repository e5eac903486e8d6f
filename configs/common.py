"""Fields shared by every config; each config file overrides the model sizes."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = m = ml_collections.ConfigDict()
    m.latent_channels = 512  # channels of y (official `dim`)
    m.num_slices = 16  # levels; slice width = latent_channels / num_slices
    m.analysis_dims = (256, 384, 512, 512)  # g_a embed dims per stage
    m.analysis_depths = (1, 2, 2, 3)  # Swin blocks per g_a stage
    m.analysis_heads = (16, 16, 16, 16)  # attention heads per g_a stage
    m.synthesis_dims = (512, 512, 384, 256)  # g_s embed dims per stage
    m.synthesis_depths = (3, 2, 2, 1)  # Swin blocks per g_s stage
    m.synthesis_heads = (16, 16, 16, 16)  # attention heads per g_s stage
    m.window = 8  # Swin window side, in tokens
    m.mlp_ratio = 4.0  # Swin MLP hidden width / embed dim
    m.construction_size = (256, 256)  # image size the official blocks are built for (px);
    # window/shift decisions come from it, never from the runtime size (SPEC §2)
    m.bottleneck_filters = (3, 3, 3, 3)  # factorized-prior density network widths
    m.remat = False  # rematerialise Swin blocks in backprop (memory for compute)

    config.loss = l = ml_collections.ConfigDict()
    l.num_samples = 5  # M: detail samples per image in training
    l.mse_scale = 128.0  # lambda_l = mse_scale * l (MSE on [0,1] images)
    l.lpips_log2_offset = 5.0  # gamma_l = 2 ** (lpips_log2_offset - l / 8)
    l.rate_log2_offset = 6.0  # beta_l = 2 ** (rate_log2_offset - 3 l / 8)
    l.syntactic_weight = 0.5  # weight of the syntactic (level-16, no sampling) term
    l.synonymous_weight = 0.5  # weight of the synonymous (level-l, sampled) term
    l.balance_rate = False  # add 64*std_s(bpp_s) - 4*bpp_{slice l} (official first 2 epochs)
    l.balance_std_weight = 64.0  # weight of std_s(bpp_s) when balance_rate
    l.balance_chunk_weight = 4.0  # weight of -bpp_{slice l} when balance_rate
    l.lpips_dropout = False  # official train-mode LPIPS (Dropout p=0.5 on the heads)
    return config
