"""``orch doctor``: what is wrong with this setup, in a few lines."""

from __future__ import annotations
