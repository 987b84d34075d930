"""vqacache: featurize VideoQA datasets once into Zarr stores, train heads from the cache."""

__version__ = "0.1.0"
