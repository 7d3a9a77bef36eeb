"""Execution options of the networks: how they run, not what they compute.

Both setters walk a module (a layer, a network, a whole model) and change
every network inside it; they take effect at the next trace of any
`tf.function` that uses the networks, and change no variable.
"""

from vflow_tfp.nets import blocks
from vflow_tfp.nets import context
from vflow_tfp.nets import conv_attention

__all__ = ['set_attention_query_block', 'set_compute_dtype']


def _self_and_submodules(module):
    # `submodules` leaves out the module itself, which may be the network.
    return (module, *module.submodules)


def set_attention_query_block(module, query_block):
    """Sets `query_block` of every `GatedAttention` inside `module`.

    `None` keeps the attention weights for the backward pass; an int
    recomputes them there in blocks of that many queries, so no `T x T`
    tensor is kept (memory linear in `T`; same values and gradients).
    Returns the number of blocks changed.
    """
    blocks.check_query_block(query_block, 'set_attention_query_block')
    found = [m for m in _self_and_submodules(module)
             if isinstance(m, blocks.GatedAttention)]
    for block in found:
        block.query_block = query_block
    return len(found)


def set_compute_dtype(module, compute_dtype):
    """Runs every `ConvAttnNet` and `ContextNet` inside `module` in
    `compute_dtype` (`tf.bfloat16`, `tf.float16`, or `None` for the
    variables' dtype).

    Mixed precision: convolutions, attention and gates run in the low
    precision dtype with the float32 variables cast to it; layer-norm
    statistics and every network output are float32, so the couplings'
    mixture CDFs, logits and log-determinants stay in float32. Returns the
    number of networks changed.
    """
    found = [m for m in _self_and_submodules(module)
             if isinstance(m, (conv_attention.ConvAttnNet,
                               context.ContextNet))]
    for net in found:
        net.compute_dtype = compute_dtype
    return len(found)
