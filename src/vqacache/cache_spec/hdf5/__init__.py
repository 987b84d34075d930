"""HDF5 both ways: export a store in a layout other VideoQA code reads, import such a file as
a read-only store. See ``docs/hdf5.md``."""

from vqacache.cache_spec.hdf5.export import ExportReport, export_store
from vqacache.cache_spec.hdf5.import_ import ImportReport, import_file
from vqacache.cache_spec.hdf5.layouts import LAYOUTS, H5Layout, get_layout, slot_frames

__all__ = ["LAYOUTS", "ExportReport", "H5Layout", "ImportReport", "export_store", "get_layout", "import_file", "slot_frames"]
