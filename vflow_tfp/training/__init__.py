"""Training utilities: learning-rate schedules and weight averaging."""

from vflow_tfp.training.ema import WeightEMA
from vflow_tfp.training.schedules import WarmupHoldDecay

__all__ = ['WarmupHoldDecay', 'WeightEMA']
