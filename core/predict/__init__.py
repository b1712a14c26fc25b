"""CLI package: `python -m core.predict` (the library is core.registry.predict)."""
