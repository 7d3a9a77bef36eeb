"""Prints the measured numerical accuracy of every bijector.

    python tests/numerics_report.py [--batch N]

For each bijector of `bijector_cases` in float32 and float64: the maximum
data-side round-trip error |x - forward(inverse(x))|, the latent-side one
|z - inverse(forward(z))| (both through `tf.identity`, so no cache hit), and
the maximum |ildj - log|det J|| against the autodiff Jacobian. The unit tests
assert bounds on the same quantities; this script reports the values.
"""

import argparse

import tensorflow as tf

import bijector_cases


def measure(case, dtype, seeds):
    bij = case.build(dtype)
    rt_data = rt_latent = ldj = 0.0
    for seed in seeds:
        x = bijector_cases.data_points(case, dtype, seed=seed)
        y = bij.inverse(x)
        rt_data = max(rt_data, float(tf.reduce_max(tf.abs(
            bij.forward(tf.identity(y)) - x))))
        z = bijector_cases.latent_points(case, bij, dtype, seed=seed + 1000)
        rt_latent = max(rt_latent, float(tf.reduce_max(tf.abs(
            bij.inverse(tf.identity(bij.forward(z))) - z))))
        ildj = bij.inverse_log_det_jacobian(
            x, event_ndims=len(case.event_shape))
        expected = bijector_cases.autodiff_ildj(bij, tf.identity(x),
                                                len(case.event_shape))
        ldj = max(ldj, float(tf.reduce_max(tf.abs(ildj - expected))))
    return rt_data, rt_latent, ldj


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=5,
                        help='independent input draws per bijector')
    args = parser.parse_args()
    tf.random.set_seed(0)
    seeds = list(range(args.seeds))
    header = (f'{"bijector":38s} {"dtype":8s} {"max|x-f(f^-1(x))|":>18s} '
              f'{"max|z-f^-1(f(z))|":>18s} {"max|ldj-autodiff|":>18s}')
    print(header)
    print('-' * len(header))
    for name in sorted(bijector_cases.CASES):
        for dtype in (tf.float32, tf.float64):
            rt_d, rt_l, ldj = measure(bijector_cases.CASES[name], dtype, seeds)
            print(f'{name:38s} {dtype.name:8s} {rt_d:18.2e} {rt_l:18.2e} '
                  f'{ldj:18.2e}', flush=True)


if __name__ == '__main__':
    main()
