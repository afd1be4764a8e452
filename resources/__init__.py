"""Icons and report templates, installed as the `allblast_resources` package."""
from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """A file shipped in resources/ (an editable checkout or an installed wheel alike)."""
    return Path(str(files(__name__).joinpath(*parts)))
