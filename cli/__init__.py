"""The ``rerank`` command-line interface (installed as ``pillar_rerank.cli``)."""
