"""vflow_tfp: VFlow and Flow++ as TensorFlow Probability bijectors."""

from vflow_tfp import bijectors
from vflow_tfp.bijector_caches import clear as clear_bijector_caches
from vflow_tfp.initialization import data_dependent_init

__version__ = '0.1.0'

__all__ = ['bijectors', 'clear_bijector_caches', 'data_dependent_init',
           '__version__']
