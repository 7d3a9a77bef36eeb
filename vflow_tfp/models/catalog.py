"""The names of the model presets and their one-line summaries.

Free of TensorFlow, so that a command can refuse a misspelt preset before
TF starts (several seconds). `presets` builds the models; it has a factory
for exactly these names (checked when it is imported).
"""

__all__ = ['TOY_DIMS', 'TOY_STEPS', 'check_name', 'describe', 'names']

# The toy experiment's grid (VFlow paper §5): steps L, and the dimensions
# D_X + D_Z of the VFlows (Glow is D = 2).
TOY_STEPS = (2, 3, 5, 10, 20)
TOY_DIMS = (4, 6, 8, 10)

_SUMMARIES = {
    'flowpp_cifar10':
        'Flow++ CIFAR-10, 3.08 bpd: 31,443,440 parameters (Table 3/4).',
    'vflow_cifar10': (
        'VFlow 6-channel CIFAR-10, 2.98 bpd: 39,700,096 parameters '
        '(37.86 Mi; Table 1/3).'),
    'vflow_cifar10_f64_k16':
        'VFlow 6-channel CIFAR-10 with F=64, K=16, 3.03 bpd (Table 3).',
    'vflow_cifar10_f56_k10':
        'VFlow 6-channel CIFAR-10 with F=56, K=10, 3.08 bpd (Table 3).',
    'flowpp_cifar10_4m':
        '3-channel Flow++ of the 4M budget, B=13, 3.21 bpd (Tables 2/5).',
    'vflow4_cifar10_4m': (
        '4-channel VFlow of the 4M budget with f_affine, B=11, 3.15 bpd '
        '(Tables 2/5).'),
    'vflow6_cifar10_4m': (
        '6-channel VFlow of the 4M budget with f_affine, B=10, 3.12 bpd '
        '(Tables 2/5/6).'),
    'vflow6_cifar10_4m_q6':
        '6-channel 4M VFlow, p B=9, q B=6, 3.13 bpd (Table 6).',
    'vflow6_cifar10_4m_q8':
        '6-channel 4M VFlow, p B=8, q B=8, 3.14 bpd (Table 6).',
    'glow_cifar10': (
        'Glow, 3 levels x 32 steps, width 512, uniform dequantisation '
        '(no factor-out).'),
    'flowpp_imagenet32': (
        'Flow++ ImageNet 32x32, 3.86 bpd: 168,955,724 parameters (the '
        'official launcher; weight norm, B=20, F=128, K=32).'),
    'vflow_imagenet32': (
        'VFlow ImageNet 32x32 (paper 3.83 bpd): the official launcher, '
        'weight norm, B=20, F=128, K=32, D_Z=3.'),
    'vflow_imagenet64': (
        'VFlow ImageNet 64x64 (paper 3.66 bpd): the official launcher, '
        'S2D first, plain weights, B=16, F=96, K=4, D_Z=3.'),
    'small_vflow_32':
        'CPU-sized VFlow for 32x32x3 images, D_Z=3, F=32, B=2, K=8.',
    'small_vflow_16':
        'CPU-sized VFlow for 16x16x3 images, D_Z=3, F=32, B=2, K=8.',
    'small_flowpp_16':
        'CPU-sized Flow++ for 16x16x3 images, F=32, B=2, K=8.',
    'tiny_vflow':
        'Tiny VFlow for 8x8x3 images, D_Z=3, F=16, B=1, K=4 (unit tests).',
    'tiny_flowpp':
        'Tiny Flow++ for 8x8x3 images, F=16, B=1, K=4 (unit tests).',
}
for _steps in TOY_STEPS:
    _SUMMARIES[f'checkerboard_glow_{_steps}'] = (
        f'Glow with {_steps} steps on the 2-D checkerboard (paper §5).')
    for _dims in TOY_DIMS:
        _SUMMARIES[f'checkerboard_vflow_{_steps}_{_dims}'] = (
            f'VFlow on the 2-D checkerboard, {_dims} dims (D_Z={_dims - 2}), '
            f'{_steps - 1} p-steps + 1 q-step (paper §5).')


def names():
    """Names of all presets, sorted."""
    return sorted(_SUMMARIES)


def check_name(name):
    """Raises `ValueError` for an unknown preset `name`, listing the
    presets of its family (its first word), or all of them."""
    # A list or a dict (from a settings file) cannot be looked up at all.
    if not isinstance(name, str) or name not in _SUMMARIES:
        close = [n for n in _SUMMARIES
                 if n.split('_')[0] == str(name).split('_')[0]]
        raise ValueError(f'Unknown preset {name!r}. Presets: '
                         f'{", ".join(sorted(close) or names())}.')


def describe(name):
    """One-line summary of preset `name`."""
    check_name(name)
    return _SUMMARIES[name]
