"""vflow_tfp: VFlow and Flow++ as TensorFlow Probability bijectors."""

from vflow_tfp import lazy_modules

__version__ = '0.1.0'

__all__ = ['bijectors', 'clear_bijector_caches', 'data_dependent_init',
           '__version__']

# Loaded on first use (see `lazy_modules`): importing the package starts
# no TensorFlow.
__getattr__, __dir__ = lazy_modules.lazy_attributes(__name__, {
    'bijectors': 'vflow_tfp.bijectors',
    'clear_bijector_caches': 'vflow_tfp.bijector_caches:clear',
    'data_dependent_init': 'vflow_tfp.initialization:data_dependent_init',
})
