"""`python -m core.train`: the same CLI as `python -m core.training` (the name recorded commands use)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("core.training", run_name="__main__", alter_sys=True)
