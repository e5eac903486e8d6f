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
    # window/shift decisions come from it, never from the runtime size (MODEL.md §2)
    m.bottleneck_filters = (3, 3, 3, 3)  # factorized-prior density network widths
    m.remat = False  # rematerialise Swin blocks in backprop (memory for compute)
    m.attention_chunk_windows = 0  # windows per attention chunk under jax.checkpoint (0: all);
    # bounds the (heads, 64, 64)-per-window logits, the largest tensors at high resolution
    m.dtype = "float32"  # compute dtype: "float32" | "bfloat16" | "auto" (bf16 on GPU/TPU,
    # float32 on CPU); parameters, optimizer state, y, z, (sigma, mu), x_hat, rates and losses
    # stay float32 whatever it is; also the discriminator's and the loss's LPIPS
    m.precision = "highest"  # products: "highest" (full float32) | "default" (backend's fast
    # path: TF32 on Ampere+ GPUs, one bf16 pass on TPUs; same as highest on CPU)
    m.attention_implementation = ""  # jax.nn.dot_product_attention's: "" (JAX's choice) |
    # "xla" | "cudnn" (GPU, bfloat16 only)

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

    config.phase = "main"  # "warming" | "main" | "gan" (MODEL.md §4), or a sequence run in order in
    # one train.py, e.g. "warming,main": each phase in workdir/<phase>, starting from the
    # previous one's export; the last export is copied to workdir/export
    config.phase_overrides = ml_collections.ConfigDict()  # <phase>.<section>.<field>: values
    # used only while that phase runs, e.g. phase_overrides.warming.train.num_steps
    config.seed = 0  # init, data order/crops and training noise (per step: fold_in(rng, step))

    config.data = d = ml_collections.ConfigDict()
    d.train = ""  # training image folder (recursive); "" with no tfds_name: scikit-image photos
    d.val = ""  # held-out validation image folder (required unless both train/tfds_name are "")
    d.tfds_name = ""  # TFDS dataset read with tfds.data_source (prepared as array_record)
    d.tfds_split = "train"  # TFDS split for training
    d.tfds_data_dir = ""  # TFDS data_dir ("" = TFDS default)
    d.batch_size = 16  # GLOBAL batch (all devices and hosts); must divide by the device count
    d.crop_size = 256  # side of the random square training crops (px, multiple of 64)
    d.num_workers = 0  # grain worker processes per host (0 = decode in the main process)
    d.val_crop = 256  # center crop of validation images (px; 0 = whole image)

    config.train = t = ml_collections.ConfigDict()
    t.num_steps = 1_000_000  # total optimizer steps of this phase (resume continues to it)
    t.log_every = 100  # steps between scalar logs (TensorBoard + metrics.jsonl)
    t.checkpoint_every = 5000  # steps between checkpoints in workdir/checkpoints
    t.keep_checkpoints = 3  # latest checkpoints kept, plus the one of lowest validation loss
    t.eval_every = 5000  # steps between validations (0 = only at the end, -1 = never)
    t.val_samples = 1  # detail samples per image in validation
    t.image_every = 5000  # steps between PNG grids in workdir/images (0 = never)
    t.image_levels = (1, 8, 16)  # levels shown in the PNG grids
    t.balance_rate_steps = 0  # with loss.balance_rate: add it for the first N steps (0 = all)
    t.init_from = ""  # workdir (or export dir) of the previous phase to start from
    t.output_bias_init = -1.0  # >= 0: g_s's output conv bias at a fresh init (-1: PyTorch's
    # default, official); 0.45 (about the mean of photos) avoids the early collapse (demo.py)
    t.profile_steps = 0  # jax.profiler trace of this many steps after the first, in workdir/profile

    config.optim = o = ml_collections.ConfigDict()
    o.lr = 1e-4  # AdamW learning rate of the model (main and GAN phases)
    o.warmup_steps = 0  # linear learning-rate warm-up from lr/warmup_steps (0 = off, official)
    o.cosine_decay = False  # after the warm-up, cosine decay of the model's learning rate to
    # final_lr_fraction * lr at the phase's last step (train.num_steps); official: constant
    o.final_lr_fraction = 0.1  # with cosine_decay: the learning rate at the end of the phase
    o.b1 = 0.9  # Adam beta1
    o.b2 = 0.999  # Adam beta2
    o.eps = 1e-8  # Adam epsilon
    o.weight_decay = 5e-5  # AdamW weight decay of the model
    o.clip_norm = 0.5  # global-norm gradient clipping of the model (0 = off)
    o.aux_lr = 1e-3  # AdamW learning rate of the bottleneck quantiles (aux loss)
    o.aux_weight_decay = 5e-5  # AdamW weight decay of the quantiles
    o.warming_lr = 1e-4  # Adam learning rate in the warming phase
    o.warming_clip_norm = 0.0  # gradient clipping in the warming phase (0 = off, official)

    config.gan = g = ml_collections.ConfigDict()
    g.cond_channels = 12  # channels of the level-specific conditioning conv
    g.widths = (64, 128, 256, 512)  # spectral-norm conv widths (k4 s2 p1)
    g.lr = 2e-4  # discriminator AdamW learning rate
    g.b1 = 0.9  # discriminator Adam beta1
    g.b2 = 0.999  # discriminator Adam beta2
    g.weight_decay = 0.01  # discriminator AdamW weight decay (PyTorch AdamW default)
    g.clip_norm = 1.0  # discriminator global-norm clipping (0 = off; official: none)
    g.adversarial_weight = 1.0  # scale of the generator's adversarial terms
    return config
