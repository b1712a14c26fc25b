"""`python -m core.quantize`: the same CLI as `python -m core.quantization` (the name recorded commands use)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("core.quantization", run_name="__main__", alter_sys=True)
