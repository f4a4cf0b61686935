"""Settings: the typed model (``model``, below the providers, which declare their tables on it)
and the loader (``loader``: pyproject, environment, flags), which is given the tables' owners."""
