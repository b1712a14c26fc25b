"""DermaDistill core library: data -> models -> distillation -> training -> quantization -> explanation -> evaluation."""

__version__ = "0.1.0"
