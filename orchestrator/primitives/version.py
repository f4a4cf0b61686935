"""orch's one version: the installed distribution's (pyproject.toml's ``[project] version``).

The baseline's fingerprint and ``orch --version`` use it, so it is read in one place."""

from importlib.metadata import PackageNotFoundError, version

#: The distribution orch is installed as (the name ``orch`` on PyPI is someone else's).
DISTRIBUTION = "pyinfra-orch"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # pragma: no cover (a source tree that was never installed)
    __version__ = "0+unknown"
