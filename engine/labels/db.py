"""Transitional: the names the window still imports from the label database's former single
module. The database now lives in `location` (where it is), `schema` (its tables and migrations),
`connection` (opening it), `errors` (StoreError) and `stamps` (annotator, time stamps); import from
those. This module goes once allblast_gui no longer imports it.
"""
from __future__ import annotations

from ..utils.places import user_data_dir as user_data_root
from .connection import seed_copy
from .errors import StoreError
from .location import db_path_in, user_db_path
from .stamps import now_utc

__all__ = ["StoreError", "db_path_in", "now_utc", "seed_copy", "user_data_root", "user_db_path"]
