"""PTB-XL data layer: records, the condition table and grain pipelines."""

from ecgjax.data.ptbxl import PTBXL, embedded_data_dir, load_ptbxl
from ecgjax.data.table import DataError

__all__ = ["PTBXL", "DataError", "embedded_data_dir", "load_ptbxl"]
