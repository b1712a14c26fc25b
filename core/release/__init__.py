"""CLI package: `python -m core.release` (the library is core.registry.release)."""
