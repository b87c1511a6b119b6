r"""Where the time of one CPU demo detection trial goes, phase by phase.

Runs one trial the way ``python -m detection.trials`` runs it for ``python -m demo`` (the
demo preset's detection config and overrides, the demo's generated VOC set, the real
``detection.train_net`` set-up and ``Trainer`` with all its hooks), instrumented:

- start-up: a fresh interpreter importing ``detection.train_net`` (separate process), then
  ``setup()`` (config, detectron2's ``default_setup``, data set registration and check) and
  the trainer's construction (model, optimizer, loader, weights);
- every iteration split into data loading, the forward of the backbone, the RPN and the ROI
  heads (with the res5 head), the rest of the forward (input normalisation and padding),
  backward and the optimizer step;
- the hooks after the last iteration: checkpoints, precise BN, the final evaluation (split
  into the model's forward and the rest: test loader and the VOC evaluator).

Prints one table (seconds, and the share of the trial each phase extrapolates to at
``--full-iters`` iterations) and writes JSON. Use ``--iters`` well below the full schedule on a
busy machine: the per-iteration numbers are medians and means over those iterations.

    python benchmarks/demo_trial_profile.py --weights output/demo/pretrain/moco_r50_c4.pkl \
        --data-root output/demo/data/voc --iters 100 --out /tmp/moco.json
    python benchmarks/demo_trial_profile.py --init random_init --iters 60  # generates a set
    python benchmarks/demo_trial_profile.py --iters 4 TEST.PRECISE_BN.NUM_ITER 2  # KEY VALUE
"""

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common.known_warnings import filter_known_warnings  # noqa: E402

filter_known_warnings()

import torch  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402

from common.io import atomic_write_json  # noqa: E402
from demo.presets import PRESETS  # noqa: E402
from detection.train_net import Trainer, setup  # noqa: E402

MODULES = ("backbone", "proposal_generator", "roi_heads")


class Clock:
    """Accumulates wall seconds per (phase, training-or-eval) key."""

    def __init__(self):
        self.seconds, self.calls = collections.Counter(), collections.Counter()
        # set while a hook runs: precise BN and the evaluation call the model from hooks
        self.context = ""

    def phase(self, module):
        """ "hooks" inside a hook, else "train" or "eval" by the module's mode."""
        return self.context or ("train" if module.training else "eval")

    def add(self, key, seconds):
        self.seconds[key] += seconds
        self.calls[key] += 1

    def wrap(self, key, fn, context=""):
        """``fn`` timed under ``key`` (same arguments and result); ``context`` is set while it
        runs."""

        def timed(*args, **kwargs):
            start, self.context = time.perf_counter(), context or self.context
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - start)
                self.context = ""

        return timed


def time_modules(model, clock):
    """Forward hooks timing each of MODULES, keyed "train/<name>" or "eval/<name>"."""
    starts = {}
    for name in MODULES:
        module = getattr(model, name)

        def pre(mod, args, name=name):
            starts[name] = time.perf_counter()

        def post(mod, args, out, name=name):
            clock.add(f"{clock.phase(mod)}/{name}", time.perf_counter() - starts[name])

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


class StepClock(HookBase):
    """Wall time of each step (run_step and the other hooks' before_step) and detectron2's data
    time."""

    def __init__(self):
        self.steps, self.data = [], []

    def before_step(self):
        self._start = time.perf_counter()

    def after_step(self):
        self.steps.append(time.perf_counter() - self._start)
        self.data.append(float(self.trainer.storage.history("data_time").latest()))


def import_seconds():
    """Wall seconds of a fresh interpreter that imports detection.train_net and exits."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import detection.train_net"],
        cwd=REPO,
        check=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    return time.perf_counter() - start


def trial_args(args, data_root, out_dir):
    """``detection.train_net`` arguments of the trial, as the demo's trial runner builds them."""
    preset = PRESETS[args.preset]
    opts = [
        *preset.detection_opts,
        *preset.init_opts.get(args.init, ()),
        "MODEL.WEIGHTS", args.weights,
        "TRANSFER.VOC_LIKE_ROOT", data_root,
        "OUTPUT_DIR", out_dir,
        "SEED", "0",
        *args.opts,
    ]  # fmt: skip
    if args.iters:
        opts += ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({args.iters - 1},)"]
    argv = ["--config-file", preset.detect_config, *opts]
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(argv)


def run_trial(args, data_root, out_dir):
    """Run the instrumented trial; returns the phase dict (seconds) and per-step lists."""
    clock = Clock()
    start = time.perf_counter()
    cfg = setup(trial_args(args, data_root, out_dir))
    clock.add("startup/setup", time.perf_counter() - start)
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    clock.add("startup/trainer", time.perf_counter() - start)
    time_modules(trainer.model, clock)
    inner = trainer._trainer
    inner.optimizer.step = clock.wrap("train/optimizer", inner.optimizer.step)
    steps = StepClock()
    for hook in trainer._hooks:
        name = type(hook).__name__
        hook.after_step = clock.wrap(f"hooks/{name}", hook.after_step, "in_hooks")
        hook.after_train = clock.wrap(f"after_train/{name}", hook.after_train, "in_hooks")
    trainer.register_hooks([steps])
    trainer._hooks.insert(0, trainer._hooks.pop())  # first, so it times the other hooks too
    forward = trainer.model.forward

    def timed_forward(*a, **k):  # "train/model" in the steps, "in_hooks/model" in hooks
        start = time.perf_counter()
        try:
            return forward(*a, **k)
        finally:
            clock.add(f"{clock.phase(trainer.model)}/model", time.perf_counter() - start)

    trainer.model.forward = timed_forward
    start = time.perf_counter()
    trainer.train()
    clock.add("train()", time.perf_counter() - start)
    return cfg, clock, steps


def breakdown(clock, steps, import_s, full_iters):
    """Rows (phase, measured seconds, seconds at ``full_iters`` iterations or None when the
    phase does not scale with them) of the trial."""
    n, s = len(steps.steps), clock.seconds
    data, step_total = sum(steps.data), sum(steps.steps)
    fwd = {m: s[f"train/{m}"] for m in MODULES}
    per_iter = {"data loading": data}
    per_iter.update({f"forward {m}": v for m, v in fwd.items()})
    per_iter["forward rest (input normalisation, padding)"] = s["train/model"] - sum(fwd.values())
    per_iter["optimizer step"] = s["train/optimizer"]
    # the rest of run_step: backward (and the loss sum, the metrics of the step)
    per_iter["backward + rest of the step"] = (
        step_total - data - s["train/model"] - s["train/optimizer"]
    )
    rows = [("interpreter start + imports (separate process)", import_s, None)]
    rows.append(("setup(): config, default_setup, data sets + check", s["startup/setup"], None))
    rows.append(("Trainer(): model, optimizer, loader, weights", s["startup/trainer"], None))
    for name, v in per_iter.items():
        rows.append((f"iterations: {name}", v, v / n * full_iters))
    # after_step hooks run every iteration; precise BN and checkpoints run in a few of them
    for key in sorted(k for k in s if k.startswith(("hooks/", "after_train/"))):
        if s[key] < 0.01:
            continue
        scales = key in ("hooks/IterationTimer", "hooks/LRScheduler", "hooks/PeriodicWriter")
        rows.append((key, s[key], s[key] / n * full_iters if scales else None))
    if s["in_hooks/model"]:  # precise BN (train mode) and the evaluation (eval mode)
        rows.append(("  of which model forward in hooks", s["in_hooks/model"], None))
        for m in MODULES:
            rows.append((f"  of which {m} in hooks", s[f"in_hooks/{m}"], None))
    return rows, n


def main(argv=None):
    """Profile one demo trial; print the table, write JSON (``--out``), return the result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="default", help="demo preset (CPU presets only)")
    p.add_argument("--init", default="moco", choices=["moco", "random_init"])
    p.add_argument("--weights", default="", help="converted MoCo .pkl ('' = random init)")
    p.add_argument("--iters", type=int, default=0, help="iterations (0 = the config's)")
    p.add_argument("--full-iters", type=int, default=0, help="extrapolate to (0 = config's)")
    p.add_argument("--data-root", default="", help="the demo's generated VOC set to reuse")
    p.add_argument("--out", default="", help="JSON output path")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data_root or os.path.join(tmp, "voc")
        if not os.path.exists(os.path.join(data_root, "VOC2007")):
            import synthetic

            synthetic.make_voc(
                data_root,
                seed=0,
                trainval_images=preset.voc_trainval,
                test_images=preset.voc_test,
                **preset.voc_kwargs,
            )
        import_s = import_seconds()
        cfg, clock, steps = run_trial(args, data_root, os.path.join(tmp, "trial"))
    from detection.config import load_cfg

    full = args.full_iters or load_cfg(preset.detect_config).SOLVER.MAX_ITER
    rows, n = breakdown(clock, steps, import_s, full)
    # rows starting with spaces are parts of the row above
    total_full = sum(b if b is not None else a for name, a, b in rows if name[0] != " ")
    median, mean = statistics.median(steps.steps), statistics.fmean(steps.steps)
    print(
        f"{n} iterations, extrapolated to {full}; s/iteration median {median:.3f}, mean {mean:.3f}"
    )
    print(f"{'phase':58s} {'measured s':>10s} {'at full s':>10s} {'share':>6s}")
    for name, measured, at_full in rows:
        v = at_full if at_full is not None else measured
        print(f"{name:58s} {measured:10.2f} {v:10.1f} {100 * v / total_full:5.1f}%")
    print(f"{'trial total (extrapolated)':58s} {'':10s} {total_full:10.1f}")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch_threads": torch.get_num_threads(),
        "args": vars(args),
        "iterations": n,
        "full_iters": full,
        "s_per_iter_median": statistics.median(steps.steps),
        "rows": [{"phase": a, "measured_s": b, "at_full_s": c} for a, b, c in rows],
        "raw_seconds": dict(clock.seconds),
    }
    if args.out:
        atomic_write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
