"""Installs vflow_tfp: VFlow and Flow++ as TensorFlow Probability bijectors."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

# Versions that are known to work together (TFP 0.25 checks for TF >= 2.18 and
# needs tf-keras of the same minor version as TF).
REQUIRED = [
    'tensorflow>=2.21,<2.22',
    'tensorflow-probability>=0.25,<0.26',
    'tf-keras>=2.21,<2.22',
    # tf.summary needs it; TF 2.21 no longer installs it.
    'tensorboard>=2.21,<2.22',
    'tensorflow-datasets>=4.9,<5',
    'numpy>=1.26,<3',
    'absl-py>=2.1,<3',
    # tensorflow-datasets 4.9.10 imports it in download_and_prepare but only
    # declares it for Python < 3.9 (tensorflow/datasets#11212).
    'importlib_resources',
    # TFP 0.25 imports distutils.version, which only setuptools provides on
    # Python >= 3.12.
    'setuptools',
]

EXTRAS = {
    'test': ['pytest>=8,<10', 'pytest-xdist>=3.5,<4', 'scikit-image>=0.24,<1',
             'matplotlib>=3.8,<4'],
    'images': ['scikit-image>=0.24,<1'],
    'plots': ['matplotlib>=3.8,<4'],
}

setuptools.setup(
    name='vflow_tfp',
    version='0.1.0',
    description=('VFlow (variational data augmentation) and Flow++ generative '
                 'flows as composable TensorFlow Probability bijectors.'),
    long_description=(HERE / 'README.md').read_text(encoding='utf-8')
    if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['vflow_tfp', 'vflow_tfp.*']),
    # TensorFlow 2.21 has wheels for these.
    python_requires='>=3.10,<3.14',
    install_requires=REQUIRED,
    extras_require=EXTRAS,
    license='Apache-2.0',
    license_files=['LICENSE'],
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
