"""Training: the distributed loop, its inputs, LR schedules, weight EMA."""

from vflow_tfp import lazy_modules

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

# Loaded on first use (see `lazy_modules`): `TrainConfig` needs no
# TensorFlow, so a command checks its settings before TF starts.
__getattr__, __dir__ = lazy_modules.lazy_attributes(__name__, {
    'TrainConfig': 'vflow_tfp.training.config:TrainConfig',
    'Trainer': 'vflow_tfp.training.loop:Trainer',
    'TrainingInputs': 'vflow_tfp.training.inputs:TrainingInputs',
    'WarmupHoldDecay': 'vflow_tfp.training.schedules:WarmupHoldDecay',
    'WeightEMA': 'vflow_tfp.training.ema:WeightEMA',
    'adam': 'vflow_tfp.training.optimizers:adam',
    'image_grid': 'vflow_tfp.images:image_grid',
    'make_output_dir': 'vflow_tfp.training.loop:make_output_dir',
    'training_inputs': 'vflow_tfp.training.inputs:training_inputs',
    'write_json_atomic': 'vflow_tfp.training.loop:write_json_atomic',
})
