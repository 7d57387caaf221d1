"""The package's version, in one place (the package and the command line's ``--version``)."""

from __future__ import annotations

__version__ = "0.1.0"
