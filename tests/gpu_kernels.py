"""Which ops of a traced graph a GPU could not run, found without a GPU.

TF's pip package registers its GPU kernels whether or not a GPU is present,
so a CPU-only machine can tell how a graph would be placed on one: an op
with no GPU kernel for its dtypes runs on the host, and each call copies
its inputs off the GPU and its outputs back (with soft placement, which
`tf.function` uses), or fails to place (without it).
"""

import collections

import tensorflow as tf
# pylint: disable-next=g-direct-tensorflow-import
from tensorflow.python.framework import kernels

# DEFAULT kernels (Identity, Const, control flow, ...) run on any device.
_DEVICES = ('GPU', 'DEFAULT')
_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = collections.defaultdict(list)
        for kernel in kernels.get_all_registered_kernels().kernel:
            if kernel.device_type in _DEVICES:
                _KERNELS[kernel.op].append(kernel)
    return _KERNELS


def _types(value):
    if value.HasField('type'):
        return [value.type]
    if value.HasField('list'):
        return list(value.list.type)
    return None   # A placeholder (an attribute of the enclosing function).


def _admits(kernel, attrs):
    for constraint in kernel.constraint:
        types = _types(attrs[constraint.name]) if (
            constraint.name in attrs) else None
        if types is not None and not set(types) <= set(
                constraint.allowed_values.list.type):
            return False
    return True


def _on_host_anyway(node):
    # TF keeps int32 tensors (shapes, indices, counters) in host memory on
    # a GPU, and strings (assertion messages) can only live there.
    types = [tf.dtypes.as_dtype(t) for value in node.attr.values()
             for t in (_types(value) or [])]
    return bool(types) and all(t in (tf.int32, tf.string, tf.resource)
                               for t in types)


def host_ops(graph_def):
    """Counts `(op, dtypes)` of the nodes that have no GPU kernel.

    Looks at the graph and at every function of its library (loop bodies,
    branches, nested `tf.function`s); calls of those functions are judged
    by their bodies. Nodes whose every dtype is int32, string or resource
    are left out: TF keeps those on the host of a GPU in any case.

    Args:
      graph_def: a `tf.compat.v1.GraphDef`, e.g. `concrete_function.graph
        .as_graph_def()`.

    Returns:
      A `collections.Counter` of `(op name, 'attr=dtype,...')`.
    """
    functions = {f.signature.name for f in graph_def.library.function}
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes += function.node_def
    found = collections.Counter()
    for node in nodes:
        if node.op in functions or _on_host_anyway(node):
            continue
        if not any(_admits(k, node.attr)
                   for k in _kernels().get(node.op, ())):
            dtypes = ','.join(
                f'{name}={tf.dtypes.as_dtype(value.type).name}'
                for name, value in sorted(node.attr.items())
                if value.HasField('type'))
            found[(node.op, dtypes)] += 1
    return found


# TF has only a CPU kernel for FarmHash fingerprints: `example_seeds` hashes
# each example's bytes on the host, once per call, by design.
FINGERPRINT = ('Fingerprint', 'T=uint8')


class Assertions:
    """A `tf.test.TestCase` mixin."""

    def assertNoHostOps(self, concrete_function, allowed=()):
        """Fails if an op of the function, but those `allowed`, has no GPU
        kernel (see `host_ops`)."""
        found = host_ops(concrete_function.graph.as_graph_def())
        for key in allowed:
            found.pop(key, None)
        self.assertEmpty(found, f'ops without a GPU kernel in '
                         f'{concrete_function.name}: {dict(found)}')
