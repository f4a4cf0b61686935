"""``orch baseline``: the baseline as a CI cache entry (key, export, import)."""

from __future__ import annotations
