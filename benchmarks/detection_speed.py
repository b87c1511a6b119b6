r"""Speed of the detection transfer (Faster R-CNN R50-C4) per speed option, with the real trainer.

Generates a VOC-format set with the project's ``synthetic`` generator (real image sizes by
default: sides 375..500 like PASCAL VOC), then for each variant runs ``--iters`` iterations of
``detection.train_net.Trainer`` (the recipe config plus the variant's overrides) and times
inference on test images. Prints a table and writes JSON (device name at the top, one row per
variant with ``s_per_iter``).

Columns: s/iter (median wall time of the iterations after ``--warmup``, the device synchronised
around each step), data s/iter (detectron2's ``data_time``: waiting for the loader), max memory
(``torch.cuda.max_memory_allocated``; peak RSS of the process on CPU) and inference s/image
(batch 1 at MIN_SIZE_TEST, after two warm-up images).

    # one H100, the recipe batch of 16 on one GPU
    python benchmarks/detection_speed.py --out benchmarks/results/detection_speed_cuda.json
    python benchmarks/detection_speed.py --variants fp32 amp --iters 20
    python benchmarks/detection_speed.py --profile fp32          # top-20 ops of 5 iterations
    # tiny CPU run (thin ResNet-50, 128-160 px images, 2 iterations): checks the script only
    python benchmarks/detection_speed.py --tiny --out benchmarks/results/detection_speed_cpu.json
"""

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detectron2.engine import HookBase, hooks  # noqa: E402

from common.io import atomic_write_json  # noqa: E402
from detection.config import (  # noqa: E402
    SYNTHETIC_DET_CLASSES,
    load_cfg,
    resolve_single_process,
)
from detection.datasets import register_from_config  # noqa: E402
from detection.speed import speed_notes  # noqa: E402
from detection.train_net import Trainer  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "detection", "pascal_voc_R_50_C4_24k_moco_1gpu.yaml")
TINY_CONFIG = os.path.join(REPO, "configs", "detection", "tiny_synthetic.yaml")

# Variant name -> config overrides on top of the recipe config. "fp32" is what the published
# numbers were produced with, except that torch's default runs cuDNN convolutions in TF32 on
# Ampere and newer; "fp32-strict" turns TF32 off (the V100 reference had none).
VARIANTS = {
    "fp32": [],
    "amp": ["SOLVER.AMP.ENABLED", "True"],
    "amp-bf16": ["SOLVER.AMP.ENABLED", "True", "TRANSFER.AMP_DTYPE", "bfloat16"],
    "cudnn-benchmark": ["CUDNN_BENCHMARK", "True"],
    "cudnn-benchmark-pad128": ["CUDNN_BENCHMARK", "True", "TRANSFER.PAD_SIZE_DIVISIBILITY", "128"],
    "channels-last": ["TRANSFER.CHANNELS_LAST", "True"],
    "fused-sgd": ["TRANSFER.SGD_IMPL", "fused"],
    "compile-res5": ["TRANSFER.COMPILE_RES5", "default"],
    "all": [
        "SOLVER.AMP.ENABLED", "True",
        "TRANSFER.AMP_DTYPE", "bfloat16",
        "TRANSFER.CHANNELS_LAST", "True",
        "CUDNN_BENCHMARK", "True",
        "TRANSFER.PAD_SIZE_DIVISIBILITY", "128",
        "TRANSFER.SGD_IMPL", "fused",
        "TRANSFER.COMPILE_RES5", "default",
    ],
    "fp32-strict": ["TRANSFER.TF32", "off"],
}  # fmt: skip


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mem_gib(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS


def make_data(root, images, test_images, min_side, max_side, seed=0):
    """Write a VOC-format set (VOC2007 + VOC2012 trainval, VOC2007 test) under ``root`` with
    ``synthetic.make_voc``, and its class names to ``root/classes.json``, unless the set is
    there already (a set made elsewhere needs no OpenCV here). Returns ``root``."""
    if not os.path.exists(os.path.join(root, "VOC2007", "ImageSets", "Main", "test.txt")):
        import synthetic  # imports OpenCV: only needed to generate

        synthetic.make_voc(
            root,
            seed=seed,
            trainval_images=images,
            test_images=test_images,
            min_side=min_side,
            max_side=max_side,
        )
    if not os.path.exists(os.path.join(root, "classes.json")):
        atomic_write_json(os.path.join(root, "classes.json"), list(SYNTHETIC_DET_CLASSES))
    return root


def build_cfg(config_file, data_root, device, batch, workers, iters, overrides=()):
    """The benchmark config: ``config_file`` on the generated set ``data_root`` with
    ``overrides`` (KEY VALUE list), ``iters`` iterations, no evaluation or precise BN, adjusted
    for one process. Returns the (unfrozen) config and the notes of the adjustments."""
    with open(os.path.join(data_root, "classes.json")) as f:
        classes = json.load(f)
    cfg = load_cfg(config_file)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", device,
            "MODEL.WEIGHTS", "",
            "TRANSFER.INIT", "random",  # speed does not depend on the weights
            "MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes)),
            "TRANSFER.VOC_LIKE_ROOT", data_root,
            "TRANSFER.VOC_LIKE_CLASSES", str(list(classes)),
            "TRANSFER.VOC_LIKE_PREFIX", "bench",
            "DATASETS.TRAIN", "('bench_2007_trainval', 'bench_2012_trainval')",
            "DATASETS.TEST", "('bench_2007_test',)",
            "SOLVER.IMS_PER_BATCH", str(batch),
            "SOLVER.MAX_ITER", str(iters),
            "SOLVER.CHECKPOINT_PERIOD", str(10**9),
            "DATALOADER.NUM_WORKERS", str(workers),
            "TEST.PRECISE_BN.ENABLED", "False",
            "TEST.EVAL_PERIOD", "0",
        ]
        + list(overrides)
    )  # fmt: skip
    notes = resolve_single_process(cfg, world_size=1)
    register_from_config(cfg)
    return cfg, notes


class StepTimer(HookBase):
    """Wall time and data time of every step (device synchronised before and after), and an
    optional torch.profiler over steps [profile_start, profile_start + profile_steps)."""

    def __init__(self, device, profile_start=-1, profile_steps=0):
        self.device, self.times, self.data_times = device, [], []
        self.profile_start, self.profile_steps, self.profiler = profile_start, profile_steps, None

    def before_step(self):
        if self.trainer.iter == self.profile_start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.startswith("cuda"):
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
        _sync(self.device)
        self._start = time.perf_counter()

    def after_step(self):
        _sync(self.device)
        self.times.append(time.perf_counter() - self._start)
        data_time = self.trainer.storage.history("data_time").latest()
        self.data_times.append(float(data_time))
        if self.profiler is not None and self.trainer.iter + 1 == (
            self.profile_start + self.profile_steps
        ):
            self.profiler.__exit__(None, None, None)


class BenchTrainer(Trainer):
    """The project's Trainer with a StepTimer first and without evaluation, precise BN,
    checkpoints or metric writers (they would run inside the timed steps)."""

    timer = None

    def build_hooks(self):
        keep = (hooks.IterationTimer, hooks.LRScheduler)
        return [self.timer] + [h for h in super().build_hooks() if isinstance(h, keep)]


def profile_table(prof, device, top=20):
    """Top ``top`` ops of a finished torch.profiler, by self CUDA time on GPU and by self CPU
    time on CPU. Returns (rows: list of dicts, text table, total self time of all ops in ms:
    compared with the profiled steps' wall time it shows how busy the GPU was)."""
    on_gpu = device.startswith("cuda")

    def device_us(evt):
        for name in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(evt, name):
                return getattr(evt, name)
        return 0.0

    events = list(prof.key_averages())
    events.sort(key=device_us if on_gpu else (lambda e: e.self_cpu_time_total), reverse=True)
    total = sum(device_us(e) if on_gpu else e.self_cpu_time_total for e in events) or 1.0
    rows, lines = [], []
    header = f"{'op':60s} {'calls':>7s} {'self CPU ms':>12s} {'self CUDA ms':>13s} {'% self':>7s}"
    for e in events[:top]:
        key_us = device_us(e) if on_gpu else e.self_cpu_time_total
        row = {
            "op": e.key,
            "calls": e.count,
            "self_cpu_ms": e.self_cpu_time_total / 1e3,
            "self_cuda_ms": device_us(e) / 1e3,
            "percent_of_self_total": 100.0 * key_us / total,
        }
        rows.append(row)
        lines.append(
            f"{e.key[:60]:60s} {e.count:7d} {row['self_cpu_ms']:12.2f} "
            f"{row['self_cuda_ms']:13.2f} {row['percent_of_self_total']:7.1f}"
        )
    return rows, "\n".join([header] + lines), total / 1e3


def host_waits(prof):
    """Calls and host milliseconds of the CUDA runtime's synchronising calls in a finished
    torch.profiler (``cuda*Synchronize``, ``cudaMemcpy*``: device-to-host copies of ``.item()``,
    ``nonzero`` and friends). Many calls with little time: the host waits on a GPU that is
    done (launch-bound step); much time: the host waits on a busy GPU. Returns
    {name: {"calls", "host_ms"}}."""
    out = {}
    for e in prof.key_averages():
        if e.key.startswith("cuda") and ("Synchronize" in e.key or "Memcpy" in e.key):
            out[e.key] = {"calls": e.count, "host_ms": e.self_cpu_time_total / 1e3}
    return out


def time_inference(cfg, model, images, device):
    """Median seconds per image of ``model`` (eval mode, batch 1, no grad) over the first
    ``images`` test images after two warm-up images."""
    loader = Trainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    model.eval()
    times = []
    with torch.no_grad():
        for i, inputs in enumerate(loader):
            if i >= images + 2:
                break
            _sync(device)
            start = time.perf_counter()
            model(inputs)
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    model.train()
    return statistics.median(times) if times else float("nan")


def run_variant(name, args, data_root, profile_steps=0):
    """Train ``args.warmup + args.iters`` steps of variant ``name`` and time inference.

    Returns a row dict: s_per_iter, data_s_per_iter, max_mem_gib, infer_s_per_image, notes
    (and profile rows when ``profile_steps``); or {"error": ...} when the variant failed."""
    overrides = list(VARIANTS[name]) + list(args.opts)
    if args.compile_backend:
        overrides += ["TRANSFER.COMPILE_BACKEND", args.compile_backend]
    total = args.warmup + max(args.iters, profile_steps)
    default_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    trainer = None
    try:
        cfg, notes = build_cfg(
            args.config, data_root, args.device, args.batch, args.workers, total, overrides
        )
        notes += speed_notes(cfg)
        # detectron2's default_setup applies CUDNN_BENCHMARK; the benchmark does not call it
        torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        BenchTrainer.timer = StepTimer(
            args.device, args.warmup if profile_steps else -1, profile_steps
        )
        trainer = BenchTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        timer = BenchTrainer.timer
        steps, data = timer.times[args.warmup :], timer.data_times[args.warmup :]
        row = {
            "s_per_iter": statistics.median(steps),
            "mean_s_per_iter": statistics.fmean(steps),
            "data_s_per_iter": statistics.median(data),
            "max_mem_gib": _peak_mem_gib(args.device),
            "timed_iters": len(steps),
            "overrides": overrides,
            "notes": notes,
        }
        if profile_steps:
            row["profile"], row["profile_table"], busy_ms = profile_table(
                timer.profiler, args.device
            )
            wall_ms = 1e3 * sum(timer.times[args.warmup : args.warmup + profile_steps])
            row["profile_self_total_ms"], row["profile_wall_ms"] = busy_ms, wall_ms
            row["profile_host_waits"] = host_waits(timer.profiler)
        if args.infer_images:
            row["infer_s_per_image"] = time_inference(
                cfg, trainer.model, args.infer_images, args.device
            )
        return row
    except Exception as e:  # one failing variant (OOM, compile error) must not stop the table
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    finally:
        del trainer
        BenchTrainer.timer = None
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = default_tf32
        torch.backends.cudnn.benchmark = False
        torch._dynamo.reset()
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


def format_table(rows):
    """The printed table of ``rows`` (variant -> row dict). Returns a string."""
    lines = [
        f"{'variant':24s} {'s/iter':>8s} {'data s/iter':>12s} {'max mem GiB':>12s} "
        f"{'infer s/img':>12s}  notes"
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"{name:24s} {'failed: ' + r['error']}")
            continue
        infer = r.get("infer_s_per_image", float("nan"))
        lines.append(
            f"{name:24s} {r['s_per_iter']:8.3f} {r['data_s_per_iter']:12.3f} "
            f"{r['max_mem_gib']:12.2f} {infer:12.3f}  {'; '.join(r['notes'])}"
        )
    return "\n".join(lines)


def build_parser():
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--config", default="", help="detection config (default: the 1gpu recipe)")
    p.add_argument("--tiny", action="store_true", help="tiny CPU-sized run (checks the script)")
    p.add_argument("--variants", nargs="+", default=None, help=f"subset of {list(VARIANTS)}")
    p.add_argument("--batch", type=int, default=0, help="IMS_PER_BATCH (default 16; tiny 2)")
    p.add_argument("--iters", type=int, default=0, help="timed iterations (default 30; tiny 2)")
    p.add_argument("--warmup", type=int, default=-1, help="untimed first iterations (5; tiny 1)")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (default 12; tiny 0)")
    p.add_argument("--images", type=int, default=0, help="trainval images per year (256; tiny 4)")
    p.add_argument("--min-side", type=int, default=0, help="image short side min (375; tiny 128)")
    p.add_argument("--max-side", type=int, default=0, help="image long side max (500; tiny 160)")
    p.add_argument("--infer-images", type=int, default=-1, help="timed test images (20; tiny 2)")
    p.add_argument("--data-root", default="", help="generated set to reuse (default: a temp dir)")
    p.add_argument("--make-data-only", action="store_true", help="write --data-root and exit")
    p.add_argument("--compile-backend", default="", help="TRANSFER.COMPILE_BACKEND override")
    p.add_argument("--profile", default="", help="profile this variant only (top-20 ops)")
    p.add_argument("--profile-iters", type=int, default=5, help="profiled iterations")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="", help="JSON output path")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (all rows)")
    return p


def _defaults(args):
    tiny = args.tiny
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    args.config = args.config or (TINY_CONFIG if tiny else CONFIG)

    def pick(value, unset, full, small):  # the given value, else the full or tiny default
        return value if value != unset else (small if tiny else full)

    args.batch = pick(args.batch, 0, 16, 2)
    args.iters = pick(args.iters, 0, 30, 2)
    args.warmup = pick(args.warmup, -1, 5, 1)
    args.workers = pick(args.workers, -1, 12, 0)
    args.images = pick(args.images, 0, 256, 4)
    args.min_side = pick(args.min_side, 0, 375, 128)
    args.max_side = pick(args.max_side, 0, 500, 160)
    args.infer_images = pick(args.infer_images, -1, 20, 2)
    if args.profile:
        args.variants = [args.profile]
    elif args.variants is None:
        args.variants = (
            ["fp32", "channels-last", "fused-sgd", "compile-res5"] if tiny else list(VARIANTS)
        )
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    return args


def main(argv=None):
    """Run the benchmark; print the table (and the profile), write JSON, return the result."""
    args = _defaults(build_parser().parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    result = {
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "device": args.device,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "config": os.path.relpath(args.config, REPO),
        "args": vars(args),
        "rows": rows,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data_root = make_data(
            args.data_root or os.path.join(tmp, "voc"),
            args.images,
            max(args.infer_images + 2, 3),
            args.min_side,
            args.max_side,
        )
        if args.make_data_only:
            print(f"wrote {data_root}")
            return result
        for name in args.variants:
            print(f"== {name}", flush=True)
            rows[name] = run_variant(
                name, args, data_root, profile_steps=args.profile_iters if args.profile else 0
            )
            if args.out:  # after every row: a killed run keeps what it measured
                atomic_write_json(args.out, result, indent=2)
    print(format_table(rows))
    for name, r in rows.items():
        if "profile_table" in r:
            print(
                f"\ntop-20 ops of {name} ({args.profile_iters} iterations; all ops' self time "
                f"{r['profile_self_total_ms']:.0f} ms of {r['profile_wall_ms']:.0f} ms wall):"
            )
            print(r["profile_table"])
            for call, w in r.get("profile_host_waits", {}).items():
                print(f"{call:60s} {w['calls']:7d} calls {w['host_ms']:10.2f} ms on the host")
    return result


if __name__ == "__main__":
    main()
