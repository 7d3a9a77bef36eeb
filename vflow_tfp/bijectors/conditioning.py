"""Routing of conditioning kwargs (`context`, `training`) through chains.

TFP passes extra keyword arguments down a `tfb.Chain` (and likewise down a
`tfb.JointMap` or `tfb.Blockwise`) by child name only:
`chain.forward(x, **{child.name: {...}})`, nested once per level of chains,
and silently drops keys that match no child. `tfb.Invert` passes its kwargs
straight to the bijector it wraps. Building those nested dicts by hand is the
most reported stumbling block of conditional TFP flows, so `chain_kwargs`
builds them from the bijector's structure.
"""

import tensorflow as tf
# `tfb.Chain(...)`, `tfb.Invert(...)` etc. build these non-CompositeTensor
# bases whenever a child (e.g. one holding a network) is not a
# CompositeTensor.
from tensorflow_probability.python.bijectors import blockwise as blockwise_lib
from tensorflow_probability.python.bijectors import chain as chain_lib
from tensorflow_probability.python.bijectors import invert as invert_lib
from tensorflow_probability.python.bijectors import joint_map as joint_map_lib

# The composites that hand each child the kwargs under its name.
# pylint: disable=protected-access
_ROUTE_BY_NAME = (chain_lib._Chain, joint_map_lib._JointMap,
                  blockwise_lib._Blockwise)
# pylint: enable=protected-access

__all__ = ['chain_kwargs', 'precompute_conditioning']


def _accepted(bijector):
    return getattr(bijector, 'conditioning_kwargs', ())


def chain_kwargs(bijector, **kwargs):
    """Nested kwargs that deliver `kwargs` to every conditional layer.

    A layer is conditional if it lists the kwargs it accepts in a
    `conditioning_kwargs` attribute (all couplings of this package accept
    `context` and `training`); each gets the subset it accepts. Keyword
    arguments whose value is `None` are left out.

    #### Example

    ```python
    flow = tfb.Chain([coupling_1, ActNorm(...), coupling_0])
    q = tfd.TransformedDistribution(base, tfb.Invert(flow))
    kw = chain_kwargs(q.bijector, context=ctx, training=True)
    z, log_q = q.experimental_sample_and_log_prob(n, bijector_kwargs=kw)
    ```

    Args:
      bijector: a bijector, possibly a nest of `tfb.Chain`, `tfb.JointMap`,
        `tfb.Blockwise` and `tfb.Invert`.
      **kwargs: the conditioning values, e.g. `context=..., training=...`.

    Returns:
      A dict to pass as `bijector.forward(x, **result)` or as
      `bijector_kwargs=result` to a `tfd.TransformedDistribution`; empty if
      nothing in `bijector` is conditional.

    Raises:
      ValueError: if a conditional layer shares its name with a sibling in a
        chain (TFP would hand both the same kwargs), or sits inside a
        composite bijector other than `Chain`, `JointMap`, `Blockwise` and
        `Invert`, whose routing is not by name.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _route(bijector, kwargs)


def _children(bijector):
    """The bijectors of a `tfb.Chain`, `tfb.JointMap` (any nest of them)
    or `tfb.Blockwise`."""
    return tf.nest.flatten(bijector.bijectors)


def _route(bijector, kwargs):
    # pylint: disable-next=protected-access
    if isinstance(bijector, invert_lib._Invert):
        return _route(bijector.bijector, kwargs)
    if isinstance(bijector, _ROUTE_BY_NAME):
        routed = {}
        names = [b.name for b in _children(bijector)]
        for child in _children(bijector):
            child_kwargs = _route(child, kwargs)
            if not child_kwargs:
                continue
            if names.count(child.name) > 1:
                raise ValueError(
                    f'{type(bijector).__name__.lstrip("_")} '
                    f'{bijector.name!r} has {names.count(child.name)} '
                    f'children named {child.name!r}; TFP routes kwargs by '
                    'name, so conditional layers need unique names (pass '
                    'name=... when building them).')
            routed[child.name] = child_kwargs
        return routed
    accepted = _accepted(bijector)
    if accepted:
        return {k: v for k, v in kwargs.items() if k in accepted}
    if hasattr(bijector, 'bijectors') and any(
            _route(b, kwargs) for b in _children(bijector)):
        raise ValueError(
            f'{type(bijector).__name__} {bijector.name!r} contains '
            'conditional layers but does not route kwargs by child name '
            '(as tfb.Chain, tfb.JointMap and tfb.Blockwise do); wrap them in '
            'one of those instead.')
    return {}


def precompute_conditioning(bijector, kwargs):
    """Nested kwargs in which context-only layers get their parameters.

    A conditional layer whose parameters depend on its conditioning kwargs
    but not on its input (`ConditionalAffine`) defines
    `conditioning_parameters(**its_kwargs)`, which returns those parameters
    as kwargs its maps accept instead. Replacing its kwargs by them, here,
    makes every later pass through `bijector` with the result (a sample and
    its density, say) reuse one evaluation of the layer's network. Other
    layers' kwargs are returned unchanged.

    Args:
      bijector: the bijector `kwargs` were routed for, possibly a nest of
        `tfb.Chain`, `tfb.JointMap`, `tfb.Blockwise` and `tfb.Invert`.
      kwargs: nested kwargs, as `chain_kwargs` returns them.

    Returns:
      A dict of the same nesting.
    """
    # pylint: disable-next=protected-access
    if isinstance(bijector, invert_lib._Invert):
        return precompute_conditioning(bijector.bijector, kwargs)
    if isinstance(bijector, _ROUTE_BY_NAME):
        result = dict(kwargs)
        for child in _children(bijector):
            if isinstance(kwargs.get(child.name), dict):
                result[child.name] = precompute_conditioning(
                    child, kwargs[child.name])
        return result
    compute = getattr(bijector, 'conditioning_parameters', None)
    if compute is None or not kwargs:
        return kwargs
    return compute(**kwargs)
