"""Models: VFlow / Flow++ as TFP distributions, builders and presets."""

from vflow_tfp import lazy_modules

__all__ = [
    'ConditionalFlow',
    'UniformDequantizer',
    'VFlow',
    'builders',
    'catalog',
    'presets',
    'seeds',
]

# Loaded on first use (see `lazy_modules`): `catalog` needs no TensorFlow.
__getattr__, __dir__ = lazy_modules.lazy_attributes(__name__, {
    'ConditionalFlow': 'vflow_tfp.models.conditional:ConditionalFlow',
    'UniformDequantizer': 'vflow_tfp.models.conditional:UniformDequantizer',
    'VFlow': 'vflow_tfp.models.vflow:VFlow',
    'builders': 'vflow_tfp.models.builders',
    'catalog': 'vflow_tfp.models.catalog',
    'presets': 'vflow_tfp.models.presets',
    'seeds': 'vflow_tfp.models.seeds',
})
