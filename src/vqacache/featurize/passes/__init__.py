"""The passes of a featurize run, in order, each a function of a :class:`RunContext`:

1. :func:`~.features.features_pass`: decode every video once, encode it with each encoder,
   write it into each encoder's store (``run_shard`` on the workers);
2. :func:`~.text.text_pass`: the question bundles (text features) of every split;
3. :func:`~.imageqa.imageqa_pass` (``--imageqa``): the teacher's per-frame answer
   probabilities added to the question bundles.

:mod:`vqacache.featurize.pipeline` builds the context and runs them.
"""

from vqacache.featurize.passes.context import RunContext
from vqacache.featurize.passes.features import features_pass
from vqacache.featurize.passes.imageqa import imageqa_pass
from vqacache.featurize.passes.text import text_pass

__all__ = ["RunContext", "features_pass", "imageqa_pass", "text_pass"]
