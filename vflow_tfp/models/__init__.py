"""Models: VFlow / Flow++ as TFP distributions, builders and presets."""

from vflow_tfp.models import builders
from vflow_tfp.models import presets
from vflow_tfp.models import seeds
from vflow_tfp.models.conditional import ConditionalFlow
from vflow_tfp.models.conditional import UniformDequantizer
from vflow_tfp.models.vflow import VFlow

__all__ = [
    'ConditionalFlow',
    'UniformDequantizer',
    'VFlow',
    'builders',
    'presets',
    'seeds',
]
