"""Bijectors that create their own variables when given none."""

__all__ = ['CreatesOwnVariables']


class CreatesOwnVariables:
    """A `tfb.Bijector` mixin for layers whose `parameters` name the
    variables they create (ActNorm's log-scale and shift, a 1x1
    convolution's weights) when their arguments leave them `None`.

    Those variables belong in `parameters` because TFP compares bijectors,
    and keys its global cache of results, by their parameters: two layers
    of equal sizes but different weights must never be equal. TFP's
    `copy(**overrides)` builds the copy from the merged arguments and then
    overwrites the copy's `parameters` with them, so `copy(weights=None)`
    made a layer with new weights whose `parameters` still said `None`:
    two such copies compared equal, and the cache gave one the other's
    outputs. Here a copy keeps the parameters it built itself.
    """

    def copy(self, **override_parameters_kwargs):
        """A new layer from `dict(self.parameters, **overrides)`; an
        override of `None` for a variable makes it create a new one."""
        return type(self)(**dict(self.parameters,
                                 **override_parameters_kwargs))
