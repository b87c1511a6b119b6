"""The bottom layer shared by every package: durable file writes (``common.io``), the
multi-process launch of the training entry points (``common.launch``), one writer per output
folder (``common.locks``), the config check of a resume (``common.runconfig``), command-line
count checks (``common.cli``), the figure set-up (``common.plotting``), the last line of every
command (``common.errors``), config merging with readable errors (``common.configs``) and what a
wrongly given path plainly is (``common.files``).

It imports nothing from this project, so ``pretrain``, ``convert``, ``detection``,
``evaluation``, ``synthetic`` and ``demo`` can all use it (docs/architecture.md, "Layers").
"""
