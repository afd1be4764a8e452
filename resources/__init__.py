"""Icons (and, as they are added, other files the app ships), installed as `allblast_resources`."""
from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """A file shipped in resources/ (an editable checkout or an installed wheel alike)."""
    return Path(str(files(__name__).joinpath(*parts)))
