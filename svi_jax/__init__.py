"""svi_jax: progressive Synonymous Image Compression (ICML 2025) in JAX/Flax."""

from svi_jax import _moved
from svi_jax.forward import (
    TrainNoise,
    compose_level_latent,
    crop_to,
    draw_train_noise,
    encode_latents,
    evaluation_pass,
    latent_shapes,
    pad_to_multiple,
    rate_terms,
    sample_details,
    train_forward,
)
from svi_jax.nn.model import ProgressiveSIC, build_model, init_params
from svi_jax.objective import aux_loss, level_weights, svi_loss, warming_loss
from svi_jax.weights.official import (
    CheckpointImportError,
    CheckpointMismatchError,
    export_official_state_dict,
    import_official_state_dict,
)

__all__ = [
    "CheckpointImportError",
    "CheckpointMismatchError",
    "ProgressiveSIC",
    "TrainNoise",
    "aux_loss",
    "build_model",
    "compose_level_latent",
    "crop_to",
    "draw_train_noise",
    "encode_latents",
    "evaluation_pass",
    "export_official_state_dict",
    "import_official_state_dict",
    "init_params",
    "latent_shapes",
    "level_weights",
    "pad_to_multiple",
    "rate_terms",
    "sample_details",
    "svi_loss",
    "train_forward",
    "warming_loss",
]

_moved.install()  # old flat-layout import paths (svi_jax.export, ...) keep working
