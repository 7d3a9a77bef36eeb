"""Data sets: the 2-D checkerboard of the VFlow toy experiment, small RGB
patches of scikit-image's bundled photographs (also as the TFDS data set
`photo_patches`, registered on import) and `tf.data` training pipelines of
TFDS image data sets."""

from vflow_tfp.data.checkerboard import CHECKERBOARD_LOG_LIKELIHOOD
from vflow_tfp.data.checkerboard import checkerboard_log_prob
from vflow_tfp.data.checkerboard import sample_checkerboard
from vflow_tfp.data.photos import TEST_PHOTOS
from vflow_tfp.data.photos import TRAIN_PHOTOS
from vflow_tfp.data.photos import photo_patches
from vflow_tfp.data.photo_patches_dataset import PhotoPatches
from vflow_tfp.data.pipelines import DatasetUnavailableError
from vflow_tfp.data.pipelines import SPLITS
from vflow_tfp.data.pipelines import SUPPORTED_DATASETS
from vflow_tfp.data.pipelines import checkerboard_dataset
from vflow_tfp.data.pipelines import distributed_image_dataset
from vflow_tfp.data.pipelines import image_dataset
from vflow_tfp.data.pipelines import image_shape
from vflow_tfp.data.pipelines import is_prepared

__all__ = [
    'CHECKERBOARD_LOG_LIKELIHOOD',
    'DatasetUnavailableError',
    'PhotoPatches',
    'SPLITS',
    'SUPPORTED_DATASETS',
    'TEST_PHOTOS',
    'TRAIN_PHOTOS',
    'checkerboard_dataset',
    'checkerboard_log_prob',
    'distributed_image_dataset',
    'image_dataset',
    'image_shape',
    'is_prepared',
    'photo_patches',
    'sample_checkerboard',
]
