"""DermaDistill core library, one package per pipeline step; each imports only the ones before it:

data -> models -> evaluation -> distillation -> training -> quantization -> explain -> learn -> registry -> service.

Evaluation scores outputs, not models, so training validates with it. `registry` is the one layer that loads
models, predicts and writes weights/; `service` is what the app's server needs besides (pool, login, PDF).
Every CLI is a package's `__main__` (see docs/cli.md); `tests/test_repository.py` checks the import order.
"""

__version__ = "0.1.0"
