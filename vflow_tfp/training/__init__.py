"""Training: the distributed loop, its inputs, LR schedules, weight EMA."""

from vflow_tfp.training.ema import WeightEMA
from vflow_tfp.training.inputs import TrainingInputs
from vflow_tfp.training.inputs import training_inputs
from vflow_tfp.training.loop import TrainConfig
from vflow_tfp.training.loop import Trainer
from vflow_tfp.images import image_grid
from vflow_tfp.training.loop import make_output_dir
from vflow_tfp.training.loop import write_json_atomic
from vflow_tfp.training.optimizers import adam
from vflow_tfp.training.schedules import WarmupHoldDecay

__all__ = [
    'TrainConfig',
    'Trainer',
    'TrainingInputs',
    'WarmupHoldDecay',
    'WeightEMA',
    'adam',
    'image_grid',
    'make_output_dir',
    'training_inputs',
    'write_json_atomic',
]
