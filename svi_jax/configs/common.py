"""Fields shared by every config; each config file overrides the model sizes."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = model = ml_collections.ConfigDict()
    model.latent_channels = 512  # channels of y (official `dim`)
    model.num_slices = 16  # levels; slice width = latent_channels / num_slices
    model.analysis_dims = (256, 384, 512, 512)  # g_a embed dims per stage
    model.analysis_depths = (1, 2, 2, 3)  # Swin blocks per g_a stage
    model.analysis_heads = (16, 16, 16, 16)  # attention heads per g_a stage
    model.synthesis_dims = (512, 512, 384, 256)  # g_s embed dims per stage
    model.synthesis_depths = (3, 2, 2, 1)  # Swin blocks per g_s stage
    model.synthesis_heads = (16, 16, 16, 16)  # attention heads per g_s stage
    model.window = 8  # Swin window side, in tokens
    model.mlp_ratio = 4.0  # Swin MLP hidden width / embed dim
    model.construction_size = (256, 256)  # image size the official blocks are built for (px);
    # window/shift decisions come from it, never from the runtime size (MODEL.md §2)
    model.bottleneck_filters = (3, 3, 3, 3)  # factorized-prior density network widths
    model.remat = False  # rematerialise Swin blocks in backprop (memory for compute)
    model.attention_chunk_windows = 0  # windows per attention chunk under jax.checkpoint (0: all);
    # bounds the (heads, 64, 64)-per-window logits, the largest tensors at high resolution
    model.dtype = "float32"  # compute dtype: "float32" | "bfloat16" | "auto" (bf16 on GPU/TPU,
    # float32 on CPU); parameters, optimizer state, y, z, (sigma, mu), x_hat, rates and losses
    # stay float32 whatever it is; also the discriminator's and the loss's LPIPS
    model.precision = "highest"  # products: "highest" (full float32) | "default" (backend's fast
    # path: TF32 on Ampere+ GPUs, one bf16 pass on TPUs; same as highest on CPU)
    model.attention_implementation = ""  # jax.nn.dot_product_attention's: "" (JAX's choice) |
    # "xla" | "cudnn" (GPU, bfloat16 only)

    config.loss = loss = ml_collections.ConfigDict()
    loss.num_samples = 5  # M: detail samples per image in training
    loss.mse_scale = 128.0  # lambda_l = mse_scale * l (MSE on [0,1] images)
    loss.lpips_log2_offset = 5.0  # gamma_l = 2 ** (lpips_log2_offset - l / 8)
    loss.rate_log2_offset = 6.0  # beta_l = 2 ** (rate_log2_offset - 3 l / 8)
    loss.syntactic_weight = 0.5  # weight of the syntactic (level-16, no sampling) term
    loss.synonymous_weight = 0.5  # weight of the synonymous (level-l, sampled) term
    loss.balance_rate = False  # add 64*std_s(bpp_s) - 4*bpp_{slice l} (official first 2 epochs)
    loss.balance_std_weight = 64.0  # weight of std_s(bpp_s) when balance_rate
    loss.balance_chunk_weight = 4.0  # weight of -bpp_{slice l} when balance_rate
    loss.lpips_dropout = False  # official train-mode LPIPS (Dropout p=0.5 on the heads)

    config.phase = "main"  # "warming" | "main" | "gan" (MODEL.md §4), or a sequence run in order in
    # one train.py, e.g. "warming,main": each phase in workdir/<phase>, starting from the
    # previous one's export; the last export is copied to workdir/export
    config.phase_overrides = ml_collections.ConfigDict()  # <phase>.<section>.<field>: values
    # used only while that phase runs, e.g. phase_overrides.warming.train.num_steps
    config.seed = 0  # init, data order/crops and training noise (per step: fold_in(rng, step))

    config.data = data = ml_collections.ConfigDict()
    data.train = ""  # training image folder (recursive); "" with no tfds_name: scikit-image photos
    data.val = ""  # held-out validation image folder (required unless both train/tfds_name are "")
    data.tfds_name = ""  # TFDS dataset read with tfds.data_source (prepared as array_record)
    data.tfds_split = "train"  # TFDS split for training
    data.tfds_data_dir = ""  # TFDS data_dir ("" = TFDS default)
    data.batch_size = 16  # GLOBAL batch (all devices and hosts); must divide by the device count
    data.crop_size = 256  # side of the random square training crops (px, multiple of 64)
    data.num_workers = 0  # grain worker processes per host (0 = decode in the main process)
    data.val_crop = 256  # center crop of validation images (px; 0 = whole image)

    config.train = train = ml_collections.ConfigDict()
    train.num_steps = 1_000_000  # total optimizer steps of this phase (resume continues to it)
    train.log_every = 100  # steps between scalar logs (TensorBoard + metrics.jsonl)
    train.checkpoint_every = 5000  # steps between checkpoints in workdir/checkpoints
    train.keep_checkpoints = 3  # latest checkpoints kept, plus the one of lowest validation loss
    train.eval_every = 5000  # steps between validations (0 = only at the end, -1 = never)
    train.val_samples = 1  # detail samples per image in validation
    train.image_every = 5000  # steps between PNG grids in workdir/images (0 = never)
    train.image_levels = (1, 8, 16)  # levels shown in the PNG grids
    train.balance_rate_steps = 0  # with loss.balance_rate: add it for the first N steps (0 = all)
    train.init_from = ""  # workdir (or export dir) of the previous phase to start from
    train.output_bias_init = -1.0  # >= 0: g_s's output conv bias at a fresh init (-1: PyTorch's
    # default, official); 0.45 (about the mean of photos) avoids the early collapse (demo.py)
    train.profile_steps = (
        0  # jax.profiler trace of this many steps after the first, in workdir/profile
    )

    config.optim = optim = ml_collections.ConfigDict()
    optim.lr = 1e-4  # AdamW learning rate of the model (main and GAN phases)
    optim.warmup_steps = 0  # linear learning-rate warm-up from lr/warmup_steps (0 = off, official)
    optim.cosine_decay = False  # after the warm-up, cosine decay of the model's learning rate to
    # final_lr_fraction * lr at the phase's last step (train.num_steps); official: constant
    optim.final_lr_fraction = 0.1  # with cosine_decay: the learning rate at the end of the phase
    optim.b1 = 0.9  # Adam beta1
    optim.b2 = 0.999  # Adam beta2
    optim.eps = 1e-8  # Adam epsilon
    optim.weight_decay = 5e-5  # AdamW weight decay of the model
    optim.clip_norm = 0.5  # global-norm gradient clipping of the model (0 = off)
    optim.aux_lr = 1e-3  # AdamW learning rate of the bottleneck quantiles (aux loss)
    optim.aux_weight_decay = 5e-5  # AdamW weight decay of the quantiles
    optim.warming_lr = 1e-4  # Adam learning rate in the warming phase
    optim.warming_clip_norm = 0.0  # gradient clipping in the warming phase (0 = off, official)

    config.gan = gan = ml_collections.ConfigDict()
    gan.cond_channels = 12  # channels of the level-specific conditioning conv
    gan.widths = (64, 128, 256, 512)  # spectral-norm conv widths (k4 s2 p1)
    gan.lr = 2e-4  # discriminator AdamW learning rate
    gan.b1 = 0.9  # discriminator Adam beta1
    gan.b2 = 0.999  # discriminator Adam beta2
    gan.weight_decay = 0.01  # discriminator AdamW weight decay (PyTorch AdamW default)
    gan.clip_norm = 1.0  # discriminator global-norm clipping (0 = off; official: none)
    gan.adversarial_weight = 1.0  # scale of the generator's adversarial terms
    return config
