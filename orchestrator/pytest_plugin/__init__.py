"""The pytest plugin: ``plugin`` is the switchboard (the ``pytest11`` entry point), ``controller``
the xdist controller's side, ``fixtures`` and ``handout`` the workers' side, ``run`` what both share."""
