"""Stage two: training heads from cached features (see the open issues). Reads stores only
through :mod:`vqacache.cache_spec`; never imports :mod:`vqacache.featurize`."""
