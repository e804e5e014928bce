"""qtune: quantum-tuned chat assistants served by vLLM."""

__version__ = "0.1.0"
