"""The benchmarks by name: what each builds and with which batch.

This module imports no TensorFlow, so that `bench/run.py` can check the
names it is given (and list them) at once; `suite.py` measures them.
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One configuration: a preset (or a TFP baseline) and its batch."""
    name: str
    description: str
    preset: Optional[str] = None
    overrides: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 16
    baseline: Optional[str] = None  # benchmark this one is compared with
    tfp_model: Optional[str] = None  # a TFP baseline (suite.TFP_MODELS)
    iw_images: int = 8
    train_only: bool = False  # skip sampling and scoring
    # The training bound: draws of (u, z) per item (VFlow.elbo's
    # draws_per_row), and its gradient estimator.
    draws: int = 1
    gradient_estimator: str = 'reparameterization'
    in_default_suite: bool = True  # run without --only


_GLOW = dict(levels=2, steps=8, filters=400)
_FLOWPP = dict(filters=32, blocks=4, components=4, dequant_blocks=2)

BENCHMARKS = {b.name: b for b in [
    Benchmark('flowpp_attn',
              'Flow++ 32x32x3, F=32, B=4, K=4, attention, dequantiser of 2 '
              'blocks, batch 16',
              preset='flowpp_cifar10', overrides=dict(_FLOWPP)),
    Benchmark('flowpp_attn_lean',
              'flowpp_attn with memory-lean attention (query blocks of 64)',
              preset='flowpp_cifar10',
              overrides=dict(_FLOWPP, attention_query_block=64)),
    Benchmark('flowpp_noattn', 'flowpp_attn without attention',
              preset='flowpp_cifar10', overrides=dict(_FLOWPP,
                                                      attention=False)),
    Benchmark('quickstart', 'small_vflow_16 (the quickstart), batch 16',
              preset='small_vflow_16'),
    Benchmark('glow', 'Glow 32x32x3, 2 levels x 8 steps, width 400, batch 16',
              preset='glow_cifar10', overrides=dict(_GLOW),
              baseline='tfp_glow'),
    Benchmark('tfp_glow', "TFP's tfb.Glow, the same architecture, batch 16",
              tfp_model='tfp_glow', overrides=dict(_GLOW)),
    Benchmark('flowpp_attn_bf16',
              'flowpp_attn in mixed precision (bfloat16 networks)',
              preset='flowpp_cifar10',
              overrides=dict(_FLOWPP, compute_dtype='bfloat16')),
    # The paper's CIFAR-10 VFlow at batch 2: training memory per image,
    # keeping the attention weights or recomputing them.
    Benchmark('vflow_cifar10_memory',
              "vflow_cifar10 (the paper's model), batch 2, train step only",
              preset='vflow_cifar10', batch_size=2, train_only=True,
              in_default_suite=False),
    Benchmark('vflow_cifar10_memory_lean',
              'vflow_cifar10 with memory-lean attention (query blocks of '
              '128), batch 2',
              preset='vflow_cifar10',
              overrides=dict(attention_query_block=128), batch_size=2,
              train_only=True, in_default_suite=False),
    Benchmark('toy_glow', 'checkerboard_glow_3 (paper §5), batch 64',
              preset='checkerboard_glow_3', batch_size=64, iw_images=1000),
    Benchmark('toy_vflow', 'checkerboard_vflow_3_10 (paper §5), batch 64',
              preset='checkerboard_vflow_3_10', batch_size=64,
              iw_images=1000),
    Benchmark('toy_vflow_recipe',
              'checkerboard_vflow_3_10 as the toy experiment trains it: '
              'batch 64, 8 draws of z per point, sticking the landing',
              preset='checkerboard_vflow_3_10', batch_size=64, draws=8,
              gradient_estimator='sticking_the_landing', train_only=True,
              in_default_suite=False),
]}
