"""A training run's settings (`TrainConfig`), checked without TensorFlow.

`bin/train.py` refuses bad settings with this module before TF starts,
which takes seconds; `training.Trainer` checks them again (`validate`).
"""

import dataclasses
import json
import math
import numbers
import os
import sys

import numpy as np

from vflow_tfp.models import catalog

__all__ = ['OPTIMIZERS', 'TrainConfig']

# Both papers train with Adam; `TrainConfig.optimizer` names it so that a
# run's recorded configuration says so, and refuses anything else.
OPTIMIZERS = ('adam',)

_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _plain(value, _containers=()):
    """The JSON value a setting stands for: numpy numbers and arrays (a
    sweep's values) as Python ones, a TF dtype as its name, a path (such
    as a `pathlib.Path` output_dir) as its string. A dict, list or tuple
    that holds itself has no JSON value: where it comes back round, it is
    kept as it is, for `check_settings` to refuse by name."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tf = sys.modules.get('tensorflow')  # no TF dtype without TF loaded
    if tf is not None and isinstance(value, tf.dtypes.DType):
        return value.name
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _containers:
            return value
        inside = _containers + (id(value),)
        if isinstance(value, dict):
            return {key: _plain(v, inside) for key, v in value.items()}
        return type(value)(_plain(v, inside) for v in value)
    return value


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs besides its data.

    Attributes mirror the flags of `bin/train.py`; see there for help. The
    defaults are those of the flags except `train_steps` and `eval_every`
    (1000, for short runs from Python, where the flags default to 100,000
    and 5000) and `dataset` (a name for the results only: the data come
    from the input functions). `iw_chunk_size` (importance samples per pass
    of the final bound) has no flag. `validation_size` only names the
    evaluation split (the input functions hold the data): held-out training
    images when positive, else the test split; results keep the keys
    `test_bpd*` either way. `iw_images` is rounded up to whole evaluation
    batches; the results record the count. `inverse_check_images` (0 = off)
    images of the first evaluation batch give every evaluation's
    `test_reconstruction_error` (`Trainer.reconstruction_error`).
    Settings are recorded in `results.json`: numpy numbers and TF dtypes are
    kept as the plain values they stand for (`tf.float64` as `'float64'`).
    """
    preset: str
    output_dir: str
    preset_overrides: dict = dataclasses.field(default_factory=dict)
    dataset: str = ''
    global_batch_size: int = 64
    train_steps: int = 1000
    max_lr: float = 1.2e-3
    warmup_steps: int = 2000
    hold_until: int = 50_000
    lr_decay: float = 0.99999
    min_lr: float = 3e-4
    optimizer: str = 'adam'
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    clip_norm: float = 1.0
    ema_decay: float = 0.999
    init_batch_size: int = 64
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    eval_batches: int = 0
    log_every: int = 100
    num_samples: int = 16
    inverse_check_images: int = 16
    iw_samples: int = 0
    iw_images: int = 256
    iw_chunk_size: int = 16
    validation_size: int = 0
    seed: int = 0
    jit_compile: bool = False
    export: bool = True

    def __post_init__(self):
        for field in dataclasses.fields(self):
            setattr(self, field.name, _plain(getattr(self, field.name)))

    def check_settings(self):
        """Raises `ValueError` with one clear line for a bad setting.

        All of `validate` that needs no TensorFlow: every setting but the
        names of `preset_overrides`, which only the preset's code knows.
        """
        if not isinstance(self.preset_overrides, dict):
            raise ValueError('preset_overrides must be a dict; got '
                             f'{self.preset_overrides!r}.')
        settings = [(f.name, getattr(self, f.name))
                    for f in dataclasses.fields(self)
                    if f.name != 'preset_overrides']
        settings += [(f'preset_overrides[{key!r}]', value)
                     for key, value in self.preset_overrides.items()]
        for name, value in settings:
            # Found now, not when results.json is first written (after the
            # first logging window), which a resumed run would repeat.
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f'{name} must be a value results.json can record (a '
                    f'number, string, bool, list or dict); got {value!r}.'
                    ) from None
        kinds = {'int': (numbers.Integral, 'an integer'),
                 'bool': (bool, 'True or False'), 'str': (str, 'a string')}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind, wanted = kinds.get(getattr(field.type, '__name__',
                                             field.type), (None, None))
            # A bool is an int to Python, and 2.5 steps or export='no' would
            # otherwise run as 3 steps or as True.
            if kind is not None and (not isinstance(value, kind) or (
                    kind is not bool and isinstance(value, bool))):
                raise ValueError(f'{field.name} must be {wanted}; got '
                                 f'{value!r}.')
        for field in dataclasses.fields(self):
            if field.type not in (float, 'float'):
                continue
            value = getattr(self, field.name)
            # First, and for every float: NaN fails no comparison below
            # (`nan < 0` is False), so it would pass them all, and inf
            # passes the one-sided ones (clip_norm, min_lr).
            if not (isinstance(value, numbers.Real)
                    and not isinstance(value, bool)
                    and math.isfinite(value)):
                raise ValueError(f'{field.name} must be a finite number; '
                                 f'got {value!r}.')
        positive = ['global_batch_size', 'train_steps', 'init_batch_size',
                    'checkpoint_every', 'eval_every', 'log_every',
                    'keep_checkpoints', 'iw_chunk_size']
        for field in positive:
            if not getattr(self, field) > 0:
                raise ValueError(f'{field} must be positive; got '
                                 f'{getattr(self, field)}.')
        for field in ['eval_batches', 'num_samples', 'inverse_check_images',
                      'iw_samples', 'iw_images',
                      'warmup_steps', 'hold_until', 'clip_norm', 'min_lr',
                      'validation_size']:
            if not getattr(self, field) >= 0:
                raise ValueError(f'{field} must be >= 0; got '
                                 f'{getattr(self, field)}.')
        if self.iw_samples and not self.iw_images:
            raise ValueError('iw_images must be positive when iw_samples is '
                             f'set; got {self.iw_images}.')
        for field in ['adam_beta1', 'adam_beta2']:
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f'{field} must be in [0, 1); got '
                                 f'{getattr(self, field)}.')
        for field in ['adam_epsilon', 'max_lr']:
            # The optimiser computes in float32: an epsilon that underflows
            # to 0 turns the update of a zero gradient into 0/0 = NaN, and a
            # rate that overflows makes every update infinite. Subnormals
            # count as 0, since TF flushes them to zero on the CPU.
            value = getattr(self, field)
            if not _FLOAT32_TINY <= value <= _FLOAT32_MAX:
                raise ValueError(
                    f'{field} must be positive and representable in float32 '
                    f'(in [{_FLOAT32_TINY:.4g}, {_FLOAT32_MAX:.4g}]); got '
                    f'{value}.')
        if self.min_lr > self.max_lr:
            # The schedule's floor above its peak (schedules refuses it too,
            # but only once TF has started).
            raise ValueError(f'min_lr ({self.min_lr}) must not exceed max_lr '
                             f'({self.max_lr}).')
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f'optimizer must be one of {OPTIMIZERS} (the '
                             f'papers\' optimiser); got {self.optimizer!r}.')
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f'lr_decay must be in (0, 1]; got '
                             f'{self.lr_decay}.')
        if self.lr_decay < 1.0 and self.hold_until < self.warmup_steps:
            # The decay counts from hold_until (SPEC §3), so the rate would
            # fall by lr_decay^(warmup_steps - hold_until) in one step at the
            # end of the warm-up.
            raise ValueError(
                f'hold_until ({self.hold_until}) must be >= warmup_steps '
                f'({self.warmup_steps}) when lr_decay < 1 ({self.lr_decay}): '
                'the decay counts from hold_until.')
        if not 0 <= self.seed < 2**31:
            # Evaluation and sampling seeds are int32 pairs `(seed, n)`.
            raise ValueError(f'seed must be in [0, 2**31); got {self.seed}.')
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f'ema_decay must be in [0, 1); got '
                             f'{self.ema_decay}.')
        if self.preset not in catalog.names():
            raise ValueError(f'Unknown preset {self.preset!r}; see '
                             '`vflow_tfp.models.presets.names()`.')
        if 'seed' in self.preset_overrides:
            # The trainer seeds the model from `seed` itself; a second seed
            # among the overrides would reach `presets.build` twice.
            raise ValueError('seed is not a preset override here; set the '
                             'run\'s seed instead (`--seed`, '
                             '`TrainConfig.seed`).')

    def validate(self):
        """Raises `ValueError` with one clear line for a bad setting.

        `check_settings`, and the names of `preset_overrides` against the
        preset's settings (this imports the presets, and TensorFlow).
        """
        self.check_settings()
        # pylint: disable-next=g-import-not-at-top
        from vflow_tfp.models import presets
        presets.check_overrides(self.preset, self.preset_overrides,
                                reserved=('seed',))
