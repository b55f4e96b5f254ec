"""oripid: build, validate and publish origin-identification datasets (ID2 / OriPID)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oripid")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
