"""CLI package: `python -m core.explain.search` (the library is core.explain.setting_search)."""
