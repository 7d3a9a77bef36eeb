"""Package attributes that import their module on first use (PEP 562).

The packages of `vflow_tfp` load their modules so, and none imports
TensorFlow when imported itself: a command can check its settings with the
modules that need no TF (`vflow_tfp.training.config`,
`vflow_tfp.models.catalog`) and refuse bad ones before TF starts, which
takes seconds.
"""

import importlib
import importlib.util
import sys

__all__ = ['lazy_attributes']


def lazy_attributes(package, attributes):
    """`(__getattr__, __dir__)` for the `__init__` of `package`.

    Args:
      package: the package's `__name__`.
      attributes: dict of attribute name -> `'module'` (the attribute is
        that module) or `'module:name'` (the attribute is `name` of it).
        The package's other modules load on first use as well.

    #### Example

    ```python
    __getattr__, __dir__ = lazy_modules.lazy_attributes(__name__, {
        'presets': 'vflow_tfp.models.presets',
        'VFlow': 'vflow_tfp.models.vflow:VFlow',
    })
    ```
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name):  # pylint: disable=invalid-name
        if name in attributes:
            module, _, attribute = attributes[name].partition(':')
        elif importlib.util.find_spec(f'{package}.{name}') is not None:
            # Any other module of the package, as if imported eagerly.
            module, attribute = f'{package}.{name}', ''
        else:
            raise AttributeError(f'module {package!r} has no attribute '
                                 f'{name!r}')
        value = importlib.import_module(module)
        if attribute:
            value = getattr(value, attribute)
        namespace[name] = value  # found directly from now on
        return value

    def __dir__():  # pylint: disable=invalid-name
        return sorted(set(namespace) | set(attributes))

    return __getattr__, __dir__
