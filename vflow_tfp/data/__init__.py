"""Data sets: the 2-D checkerboard of the VFlow toy experiment."""

from vflow_tfp.data.checkerboard import CHECKERBOARD_LOG_LIKELIHOOD
from vflow_tfp.data.checkerboard import checkerboard_log_prob
from vflow_tfp.data.checkerboard import sample_checkerboard

__all__ = [
    'CHECKERBOARD_LOG_LIKELIHOOD',
    'checkerboard_log_prob',
    'sample_checkerboard',
]
