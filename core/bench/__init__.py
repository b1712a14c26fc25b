"""CLI package: `python -m core.bench` (the library is core.registry.bench)."""
