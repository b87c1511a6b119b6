"""The bottom layer shared by every package: durable file writes (``common.io``), the
multi-process launch of the training entry points (``common.launch``) and the figure set-up
(``common.plotting``).

It imports nothing from this project, so ``pretrain``, ``convert``, ``detection``,
``evaluation``, ``synthetic`` and ``demo`` can all use it (docs/architecture.md, "Layers").
"""
