"""Invertible layers of NICE, RealNVP, Glow, Flow++ and VFlow as TFP bijectors.

Every bijector is oriented as in TFP: `forward` maps latent -> data and
`inverse` maps data -> latent. `inverse` is the closed-form direction that
`tfd.TransformedDistribution.log_prob` runs (the official code's "forward");
the mixture-of-logistics coupling's `forward` needs a numerical root finder
and serves only sampling.
"""

from vflow_tfp.bijectors.actnorm import ActNorm
from vflow_tfp.bijectors.conditional_affine import ConditionalAffine
from vflow_tfp.bijectors.conditioning import chain_kwargs
from vflow_tfp.bijectors.conditioning import precompute_conditioning
from vflow_tfp.bijectors.couplings import AdditiveCoupling
from vflow_tfp.bijectors.couplings import AffineCoupling
from vflow_tfp.bijectors.couplings import Coupling
from vflow_tfp.bijectors.couplings import MixLogisticCoupling
from vflow_tfp.bijectors.fused import FusedBijector
from vflow_tfp.bijectors.invertible_1x1 import Invertible1x1Conv
from vflow_tfp.bijectors.invertible_1x1 import Invertible1x1ConvLU
from vflow_tfp.bijectors.invertible_1x1 import LUFactors
from vflow_tfp.bijectors.mixture_logistic import inverse_logit_cdf
from vflow_tfp.bijectors.mixture_logistic import mixture_logistic_terms
from vflow_tfp.bijectors.partitions import ChannelSplit
from vflow_tfp.bijectors.partitions import Checkerboard
from vflow_tfp.bijectors.partitions import ColumnSplit
from vflow_tfp.bijectors.partitions import Partition
from vflow_tfp.bijectors.sigmoid import ImageLogit
from vflow_tfp.bijectors.sigmoid import Sigmoid
from vflow_tfp.bijectors.sigmoid import SmoothSigmoid
from vflow_tfp.bijectors.squeeze import Squeeze
from vflow_tfp.bijectors.swap_halves import SwapHalves

__all__ = [
    'ActNorm',
    'AdditiveCoupling',
    'AffineCoupling',
    'ChannelSplit',
    'Checkerboard',
    'ColumnSplit',
    'ConditionalAffine',
    'Coupling',
    'FusedBijector',
    'ImageLogit',
    'Invertible1x1Conv',
    'Invertible1x1ConvLU',
    'LUFactors',
    'MixLogisticCoupling',
    'Partition',
    'Sigmoid',
    'SmoothSigmoid',
    'Squeeze',
    'SwapHalves',
    'chain_kwargs',
    'inverse_logit_cdf',
    'mixture_logistic_terms',
    'precompute_conditioning',
]
