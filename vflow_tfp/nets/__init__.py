"""Conditioner and context networks of the Flow++/VFlow couplings (SPEC §1).

All networks are `tf.Module`s with explicit `tf.Variable`s and follow the
conditioner calling convention `net(x, context=None, training=False)`
(`ContextNet` takes no context: `net(x, training=False)`).
"""

from vflow_tfp.nets.attention import dot_product_attention
from vflow_tfp.nets.blocks import GatedAttention
from vflow_tfp.nets.blocks import GatedResidualBlock
from vflow_tfp.nets.context import ContextNet
from vflow_tfp.nets.glow_net import GlowNet
from vflow_tfp.nets.conv_attention import ConvAttnNet
from vflow_tfp.nets.layers import Conv2D
from vflow_tfp.nets.layers import Dense
from vflow_tfp.nets.layers import LayerNorm
from vflow_tfp.nets.layers import concat_elu
from vflow_tfp.nets.layers import dropout
from vflow_tfp.nets.layers import dropout_keep_probability
from vflow_tfp.nets.layers import gate
from vflow_tfp.nets.mlp import MLP
from vflow_tfp.nets.options import set_attention_query_block
from vflow_tfp.nets.options import set_compute_dtype
from vflow_tfp.nets.recycling import recycling_dead_units

__all__ = [
    'Conv2D',
    'ContextNet',
    'ConvAttnNet',
    'Dense',
    'GlowNet',
    'GatedAttention',
    'GatedResidualBlock',
    'LayerNorm',
    'MLP',
    'concat_elu',
    'dot_product_attention',
    'dropout',
    'dropout_keep_probability',
    'gate',
    'recycling_dead_units',
    'set_attention_query_block',
    'set_compute_dtype',
]
