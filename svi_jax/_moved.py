"""Old import paths of modules that the package layout moved, kept importable with a warning.

Code written against the flat layout (`from svi_jax.export import load_exported_model`,
`import svi_jax.swin`, ...) keeps working: importing an old name imports the module at its new
place, registers it under the old name too (the same module object, so both names share state),
and emits one DeprecationWarning naming the new path. One table, no file per old name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module -> new module (the layout change: docs/README "What is here")
MOVED = {
    "svi_jax.checkpoint_import": "svi_jax.weights.official",
    "svi_jax.context": "svi_jax.nn.context",
    "svi_jax.data_pipeline": "svi_jax.data.loader",
    "svi_jax.entropy_coding": "svi_jax.codec.range_coding",
    "svi_jax.entropy_coding_escape": "svi_jax.codec.escapes",
    "svi_jax.entropy_models": "svi_jax.nn.entropy_models",
    "svi_jax.export": "svi_jax.weights.export",
    "svi_jax.gan": "svi_jax.nn.discriminator",
    "svi_jax.hyperprior": "svi_jax.nn.hyperprior",
    "svi_jax.image_io": "svi_jax.data.image_io",
    "svi_jax.layers": "svi_jax.nn.layers",
    "svi_jax.lpips": "svi_jax.metrics.lpips",
    "svi_jax.model": "svi_jax.nn.model",
    "svi_jax.swin": "svi_jax.nn.swin",
    "svi_jax.torch_file": "svi_jax.weights.torch_file",
    "svi_jax.transforms": "svi_jax.nn.transforms",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self._specs = {}  # new module name -> its own spec, which importlib overwrites

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2
        )
        module = importlib.import_module(new)
        # importlib points __spec__ at the old name: exec_module puts the module's own back
        self._specs.setdefault(new, module.__spec__)
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs[module.__name__]  # already executed; keep its own spec


def install() -> None:
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
