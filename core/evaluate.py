"""`python -m core.evaluate`: the same CLI as `python -m core.evaluation` (the name recorded commands use)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("core.evaluation", run_name="__main__", alter_sys=True)
