"""The bottom layer shared by every package: durable file writes (``common.io``) and the
multi-process launch of the training entry points (``common.launch``).

It imports nothing from this project, so ``pretrain``, ``convert``, ``detection``,
``evaluation``, ``synthetic`` and ``demo`` can all use it (docs/architecture.md, "Layers").
"""
