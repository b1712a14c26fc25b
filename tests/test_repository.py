"""The repository ships what the code imports: no source or asset file may be hidden by .gitignore.

A broad `data/` rule once ignored `core/data/`, so a fresh clone could not import `core.data` although every
test passed in the working copy. This test catches that class of mistake before CI does.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("app.py", "core", "pages", "assets", "tests", ".streamlit/config.toml", ".ci", "weights/manifest.json")
GENERATED = {"__pycache__", ".pytest_cache", ".hypothesis"}


def _shipped_files():
    for entry in SHIPPED:
        path = ROOT / entry
        candidates = [path] if path.is_file() else path.rglob("*")
        for file in candidates:
            if file.is_file() and not GENERATED & set(file.relative_to(ROOT).parts) and file.suffix != ".pyc":
                yield file.relative_to(ROOT).as_posix()
    manifest = json.loads((ROOT / "weights" / "manifest.json").read_text())
    yield from (f"weights/{entry['file']}" for entry in manifest["models"].values())


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_shipped_file_is_gitignored():
    files = list(_shipped_files())
    assert any(f.startswith("core/data/") for f in files)
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(files),
                            capture_output=True, text=True)
    ignored = result.stdout.split()
    assert not ignored, f"ignored by .gitignore but needed by the app or tests: {ignored}"


def _core_imports() -> dict:
    """{core module: set of core modules it imports}, read from the source (any import, top-level or local)."""
    import ast

    graph = {}
    for path in (ROOT / "core").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("core")}
        graph[module] = targets - {module}
    return graph


def test_core_modules_import_one_way():
    """No two core modules import each other, directly or through others; core never imports streamlit."""
    graph = _core_imports()

    def reaches(start, goal, seen=()):
        return any(t == goal or (t not in seen and reaches(t, goal, (*seen, t))) for t in graph.get(start, ()))

    cycles = sorted(m for m in graph if reaches(m, m))
    assert not cycles, f"import cycles through: {cycles}"
    assert not [p for p in (ROOT / "core").rglob("*.py") if "import streamlit" in p.read_text()]


# The pipeline, lowest first: a module may import its own layer and the ones below, never one above.
# Evaluation scores outputs, not models, and training validates with it: so it sits under training.
LAYERS = (
    ("core.classes", "core.paths", "core.filelock", "core.jsonfile"),
    ("core.data",),
    ("core.models",),
    ("core.evaluation",),
    ("core.distillation",),
    ("core.training",),
    ("core.quantization",),
    ("core.explain",),
    ("core.learn",),
    ("core.registry",),
    ("core.service",),
)
# Entry points sit above every layer; nothing imports them.
ENTRY_POINTS = ("core.train", "core.evaluate", "core.quantize", "core.predict", "core.release", "core.bench",
                "core.explain.search")


def _layer(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer of LAYERS")


def _is_entry_point(module: str) -> bool:
    return module.endswith(".__main__") or module in ENTRY_POINTS


def test_core_layers_import_downwards_only():
    """data -> models -> evaluation -> distillation -> training -> quantization -> explain -> learn -> registry
    -> service: no library module imports a higher layer, and no module imports a CLI."""
    graph = _core_imports()
    upward, into_cli = [], []
    for module, targets in graph.items():
        for target in targets:
            if target == "core":
                continue
            if _is_entry_point(target) or any(target.startswith(e + ".") for e in ENTRY_POINTS):
                into_cli.append(f"{module} -> {target}")
            elif not _is_entry_point(module) and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, f"imports up the pipeline: {upward}"
    assert not into_cli, f"imports of a CLI: {into_cli}"


def test_quoted_results_are_the_manifests():
    """README's and the docs' result tables are what `python -m core.release --tables` prints from the shipped
    manifest: a re-release that changes a number fails here until every page quotes the new one."""
    from core.registry.loader import read_manifest
    from core.registry.manifest_tables import ablation_table, gate_table, referral_table, results_table

    manifest = read_manifest()
    body = lambda table: table.splitlines()[2:]  # noqa: E731 (rows without the header)
    quoted = {"README.md": body(results_table(manifest)) + body(referral_table(manifest, "0.90")),
              "docs/results.md": body(results_table(manifest)) + body(ablation_table(manifest)),
              "docs/safety.md": body(referral_table(manifest, "0.90")) + body(referral_table(manifest, "0.95"))
              + body(gate_table(manifest))}
    for page, rows in quoted.items():
        text = (ROOT / page).read_text()
        missing = [row for row in rows if row not in text]
        assert not missing, f"{page} differs from `python -m core.release --tables`:\n" + "\n".join(missing)
