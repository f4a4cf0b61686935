"""Backends: one module per provider, its base (``base``), the one registry (``registry``),
the command channel (``command``) and retries (``retry``)."""
