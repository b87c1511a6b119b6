r"""End-to-end MoCo pretraining throughput: the real training loop on an ImageNet-sized JPEG set.

Writes an ImageFolder of generated JPEGs (about 500x375 px and ~50 KiB each, like ImageNet
training images), then runs ``pretrain.train_net.train`` (config overrides per row, one epoch
of ``--warmup + --iters`` iterations) and measures:

- pairs/s: wall clock between the optimizer steps that end the warm-up and the last timed
  iteration (device synchronised), times the per-GPU batch: data loading included;
- data wait %: the loop's own ``data_time`` / ``time`` (medians over the last 20 iterations,
  from ``metrics.json``);
- peak GPU memory (``torch.cuda.max_memory_allocated``; peak RSS of the process on CPU).

Rows: the reference configuration (fp32, per-image PIL, no compile, no channels_last), the
three input pipelines (INPUT.PIPELINE pil | batched | device) eager and compiled
(SOLVER.COMPILE), a per-GPU batch sweep (KEY_BN_SPLITS so each split has ``--split`` images),
the per-image loader alone (``--workers`` processes), and last "batched" and "device" eager
with their views made in line (INPUT.PREFETCH 0) instead of in the background thread. A row
whose config the current code rejects is reported as ``unsupported: <error>``; one that fails
while running as ``failed: <error>``. Each row also records ``first_step_s`` and ``warmup_s``
(from the start of training to the end of the first and of the last warm-up step: loader
start-up, cuDNN autotuning and, compiled, the compilation).

``--opts KEY VALUE ...`` adds config overrides to every row; ``--make-data-only`` writes the
JPEG folder (``--data-root``) and exits.

    python benchmarks/pretrain_e2e.py --out benchmarks/results/pretrain_e2e_cuda.json   # GPU
    python benchmarks/pretrain_e2e.py --tiny --out benchmarks/results/pretrain_e2e_cpu.json
    python benchmarks/pretrain_e2e.py --rows "device " --opts INPUT.PREFETCH 2
"""

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.optim.optimizer import register_optimizer_step_post_hook

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from targets import E2E_MAX_DATA_WAIT, E2E_TARGET, LOADER_TARGET, STEP32_TARGET  # noqa: E402

from common.io import atomic_write_json  # noqa: E402
from pretrain import builder  # noqa: E402
from pretrain.config import load_cfg  # noqa: E402
from pretrain.data import build_train_dataset, build_train_loader  # noqa: E402
from pretrain.train_net import train  # noqa: E402


def _write_one(job):
    path, seed, width, height, quality = job
    rng = np.random.default_rng(seed)
    # smooth colour gradient + shapes + mild noise: compresses like a photo (~50 KiB at q90)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3) + np.stack(
        [xs * rng.uniform(-0.3, 0.3) + ys * rng.uniform(-0.3, 0.3) for _ in range(3)], -1
    )
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(20, width / 2), rng.uniform(20, height / 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 10, (height, width, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return os.path.getsize(path)


def write_jpeg_folder(root, n, width=500, height=375, classes=10, quality=90, processes=0):
    """Write ``n`` generated JPEGs (``width`` x ``height``) as an ImageFolder under ``root``
    (``classes`` sub-folders), in parallel. Existing complete folders are reused.

    Returns a dict: root, images, mean_kib."""
    marker = os.path.join(root, f".complete_{n}_{width}x{height}")
    if not os.path.exists(marker):
        jobs = []
        for i in range(n):
            folder = os.path.join(root, f"c{i % classes:02d}")
            os.makedirs(folder, exist_ok=True)
            jobs.append((os.path.join(folder, f"{i:07d}.jpg"), i, width, height, quality))
        # a spawned worker re-imports this script (seconds): worth it from a few hundred images
        processes = processes or min(16, os.cpu_count() or 1, max(1, n // 256))
        if processes > 1:
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                sizes = pool.map(_write_one, jobs, chunksize=64)
        else:
            sizes = [_write_one(j) for j in jobs]
        with open(marker, "w") as f:
            f.write(str(float(np.mean(sizes))))
    with open(marker) as f:
        mean_bytes = float(f.read())
    return {"root": root, "images": n, "mean_kib": mean_bytes / 1024}


def row_config(overrides):
    """The pretraining config with ``overrides`` (KEY VALUE list), validated.

    Returns (cfg, notes). Raises KeyError/ValueError (the row is then "unsupported") when
    the config is rejected."""
    return load_cfg("", [str(x) for x in overrides]), []


def _peak_mem_gib(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _last_metrics(output_dir):
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def run_training_row(overrides, args, batch):
    """Run the real training loop with ``overrides``; returns the row dict (pairs_per_s,
    data_wait_pct, peak_mem_gib, notes) or {"unsupported"/"failed": message}."""
    out_dir = tempfile.mkdtemp(prefix="e2e_", dir=args.work_dir)
    steps = args.warmup + args.iters
    overrides = list(overrides) + list(args.opts)
    overrides += ["OUTPUT_DIR", out_dir, "SOLVER.MAX_ITERS_PER_EPOCH", steps]
    try:
        cfg, notes = row_config(overrides)
    except (KeyError, ValueError, AssertionError) as e:
        shutil.rmtree(out_dir, ignore_errors=True)
        return {"unsupported": f"{type(e).__name__}: {e}".splitlines()[0]}
    stamps = []

    def after_step(optimizer, *_):
        if args.device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    handle = register_optimizer_step_post_hook(after_step)
    try:
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        torch._dynamo.reset()
        start = time.perf_counter()
        train(cfg, auto_resume=False)
        wall = time.perf_counter() - start
        metrics = _last_metrics(out_dir)
        row = {"batch": batch, "notes": notes, "run_s": wall, "overrides": overrides[:-4]}
        if stamps:
            row["first_step_s"] = stamps[0] - start
            row["warmup_s"] = stamps[min(args.warmup, len(stamps)) - 1] - start
        if len(stamps) >= steps and args.iters > 0:
            row["pairs_per_s"] = batch * args.iters / (stamps[steps - 1] - stamps[args.warmup - 1])
            row["timing"] = "optimizer-step wall clock"
        elif metrics.get("time"):
            row["pairs_per_s"] = batch / metrics["time"]
            row["timing"] = "median loop time (metrics.json)"
        if metrics.get("time") and "data_time" in metrics:
            row["data_wait_pct"] = 100.0 * metrics["data_time"] / metrics["time"]
        row["peak_mem_gib"] = _peak_mem_gib(args.device)
        return row
    except Exception as e:  # a failing row (OOM, compile error) must not stop the table
        traceback.print_exc()
        return {"failed": f"{type(e).__name__}: {e}".splitlines()[0]}
    finally:
        handle.remove()
        shutil.rmtree(out_dir, ignore_errors=True)


def run_loader_row(overrides, args):
    """Images/s of the training loader alone (no model), over ``args.iters`` batches after
    ``args.warmup``. Returns the row dict."""
    try:
        cfg, notes = row_config(list(overrides) + list(args.opts))
    except (KeyError, ValueError, AssertionError) as e:
        return {"unsupported": f"{type(e).__name__}: {e}".splitlines()[0]}
    try:
        loader, sampler = build_train_loader(build_train_dataset(cfg), cfg, 1, 0, False)
        sampler.set_epoch(0)
        n, start = 0, None
        for i, _ in enumerate(loader):
            if i == args.warmup:
                start = time.perf_counter()
            elif i > args.warmup:
                n += cfg.SOLVER.BATCH_SIZE
            if i >= args.warmup + args.iters:
                break
        rate = n / (time.perf_counter() - start) if start and n else float("nan")
        return {"images_per_s": rate, "pairs_per_s": rate, "notes": notes}
    except Exception as e:
        traceback.print_exc()
        return {"failed": f"{type(e).__name__}: {e}".splitlines()[0]}


def build_rows(args, data_root):
    """Row name -> (kind, overrides, batch, target); kind "train" or "loader"."""

    def common(batch, workers=None):
        return [
            "MODEL.DEVICE", args.device,
            "MODEL.K", args.K,
            "DATA.TRAIN", data_root,
            "DATA.NUM_WORKERS", args.workers if workers is None else workers,
            "SOLVER.BATCH_SIZE", batch,
            "MODEL.KEY_BN_SPLITS", max(1, batch // args.split),
            "SOLVER.EPOCHS", 1,
            "LOG_PERIOD", 10**6,
            "CHECKPOINT_PERIOD", 1,
            "CPU_THREADS", args.threads,
        ] + args.model_opts  # fmt: skip

    b = args.batch
    e2e = ("e2e", E2E_TARGET) if b == 256 else None
    rows = {
        "reference (fp32, pil, eager)": (
            "train",
            common(b) + ["SOLVER.AMP", "", "INPUT.PIPELINE", "pil", "SOLVER.COMPILE", "",
                         "SOLVER.CHANNELS_LAST", "False"],
            b,
            None,
        ),
    }  # fmt: skip
    for pipeline in ("pil", "batched", "device"):
        for mode in ("", "default"):
            name = f"{pipeline} {'compiled' if mode else 'eager'}"
            overrides = common(b) + ["INPUT.PIPELINE", pipeline, "SOLVER.COMPILE", mode]
            rows[name] = ("train", overrides, b, e2e)
    for sweep in args.sweep:
        mode = "reduce-overhead" if sweep <= 64 else "default"
        overrides = common(sweep) + ["INPUT.PIPELINE", args.sweep_pipeline, "SOLVER.COMPILE", mode]
        target = ("step", STEP32_TARGET) if sweep == 32 else (e2e if sweep == 256 else None)
        rows[f"batch {sweep} ({args.sweep_pipeline}, {mode})"] = ("train", overrides, sweep, target)
    rows[f"loader only: pil, {args.loader_workers} workers"] = (
        "loader",
        common(b, args.loader_workers) + ["INPUT.PIPELINE", "pil"],
        b,
        ("loader", LOADER_TARGET),
    )
    for pipeline in ("batched", "device"):  # the same rows without INPUT.PREFETCH (2 on CUDA)
        overrides = common(b) + ["INPUT.PIPELINE", pipeline, "SOLVER.COMPILE", "",
                                 "INPUT.PREFETCH", 0]  # fmt: skip
        rows[f"{pipeline} eager, in line"] = ("train", overrides, b, e2e)
    return rows


def selected(name, wanted, names):
    """Whether row ``name`` is asked for by ``wanted`` (None: every row): a value of ``wanted``
    that is a full row name of ``names`` selects that row alone, any other selects the rows
    whose names start with it ("device " selects every device row)."""
    if wanted is None:
        return True
    return any(name == w if w in names else name.startswith(w) for w in wanted)


def target_status(row, target):
    """'target met', 'missed by X%' or '' for ``row`` against ``target`` (kind, value)."""
    if target is None or "pairs_per_s" not in row:
        return ""
    kind, value = target
    got = row["pairs_per_s"]
    text = "target met" if got >= value else f"missed by {100 * (value - got) / value:.0f}%"
    if kind == "e2e":
        wait = row.get("data_wait_pct")
        if wait is None:
            text += "; data wait unknown"
        elif wait >= E2E_MAX_DATA_WAIT:
            text = (text if got < value else "missed") + f"; data wait {wait:.0f}% >= 5%"
    return f"{text} (>= {value:.0f}/s)"


def format_table(rows):
    """The printed table of ``rows`` (name -> row dict with a "target_status"). Returns str."""
    lines = [f"{'row':40s} {'pairs/s':>9s} {'data wait':>9s} {'peak GiB':>9s}  target"]
    for name, r in rows.items():
        if "unsupported" in r or "failed" in r:
            kind = "unsupported" if "unsupported" in r else "failed"
            lines.append(f"{name:40s} {kind}: {r[kind]}")
            continue
        wait = f"{r['data_wait_pct']:8.1f}%" if "data_wait_pct" in r else " " * 9
        mem = f"{r['peak_mem_gib']:9.2f}" if "peak_mem_gib" in r else " " * 9
        lines.append(f"{name:40s} {r['pairs_per_s']:9.1f} {wait} {mem}  {r['target_status']}")
    return "\n".join(lines)


def build_parser():
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--tiny", action="store_true", help="tiny CPU run: thin net, 64 px, 2 iters")
    p.add_argument("--images", type=int, default=0, help="JPEGs (default: enough for 1 epoch)")
    p.add_argument("--image-size", default="", help="WxH of the JPEGs (500x375; tiny 80x60)")
    p.add_argument("--batch", type=int, default=0, help="per-GPU batch of the main rows (256)")
    p.add_argument("--sweep", type=int, nargs="*", default=None, help="batches (32 64 128 256)")
    p.add_argument("--sweep-pipeline", default="device", help="INPUT.PIPELINE of the sweep")
    p.add_argument("--split", type=int, default=0, help="images per key-BN split (32; tiny 4)")
    p.add_argument("--iters", type=int, default=0, help="timed iterations (20; tiny 2)")
    p.add_argument("--warmup", type=int, default=0, help="untimed first iterations (8; tiny 1)")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (16; tiny 0)")
    p.add_argument("--loader-workers", type=int, default=-1, help="loader row (16; tiny 0)")
    p.add_argument("--K", type=int, default=0, help="queue length (65536; tiny 8)")
    p.add_argument(
        "--rows", nargs="*", default=None, help="only these rows (a full name) or those starting so"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--data-root", default="", help="JPEG folder to (re)use")
    p.add_argument("--work-dir", default=None, help="where row outputs go (default: temp)")
    p.add_argument("--out", default="", help="JSON output path")
    p.add_argument("--opts", nargs="+", default=[], help="KEY VALUE overrides of every row")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the compiled rows ('eager': CPU checks, no codegen)",
    )
    p.add_argument("--make-data-only", action="store_true", help="write --data-root and exit")
    return p


def _defaults(args):
    tiny = args.tiny
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not tiny else "cpu")

    def pick(value, unset, full, small):  # the given value, else the full or tiny default
        return value if value != unset else (small if tiny else full)

    args.batch = pick(args.batch, 0, 256, 8)
    args.sweep = pick(args.sweep, None, [32, 64, 128, 256], [4, 8])
    args.split = pick(args.split, 0, 32, 4)
    args.iters = pick(args.iters, 0, 20, 2)
    args.warmup = pick(args.warmup, 0, 8, 1)
    args.workers = pick(args.workers, -1, 16, 0)
    args.loader_workers = pick(args.loader_workers, -1, 16, 0)
    args.K = pick(args.K, 0, 65536, 8)
    args.image_size = pick(args.image_size, "", "500x375", "80x60")
    args.model_opts = ["MODEL.WIDTH_PER_GROUP", 16, "INPUT.SIZE", 64] if tiny else []
    largest = max([args.batch] + list(args.sweep))
    args.images = args.images or largest * (args.warmup + args.iters + 1)
    return args


def main(argv=None):
    """Run the benchmark; print the table, write JSON, return the result dict."""
    args = _defaults(build_parser().parse_args(argv))
    if len(args.opts) % 2:
        raise SystemExit(f"--opts takes KEY VALUE pairs, got {len(args.opts)} words")
    if args.make_data_only and not args.data_root:
        raise SystemExit("--make-data-only needs --data-root (where the JPEGs go)")
    builder.COMPILE_BACKEND = args.compile_backend
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    rows = {}
    result = {
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "device": args.device,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tiny": args.tiny,
        "targets": {
            "e2e_pairs_per_s_at_batch_256_split_bn": E2E_TARGET,
            "e2e_max_data_wait_pct": E2E_MAX_DATA_WAIT,
            "step_pairs_per_s_at_batch_32": STEP32_TARGET,
            "per_image_loader_images_per_s_16_workers": LOADER_TARGET,
        },
        "args": dict(vars(args)),
        "rows": rows,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = write_jpeg_folder(args.data_root or os.path.join(tmp, "jpegs"), args.images,
                                 width, height)  # fmt: skip
        result["data"] = data
        print(f"data: {data['images']} JPEGs {width}x{height}, {data['mean_kib']:.1f} KiB each")
        if args.make_data_only:
            return result
        all_rows = build_rows(args, data["root"])
        for name, (kind, overrides, batch, target) in all_rows.items():
            if not selected(name, args.rows, all_rows):
                continue
            print(f"== {name}", flush=True)
            if kind == "loader":
                row = run_loader_row(overrides, args)
            else:
                row = run_training_row(overrides, args, batch)
            # the targets are for one GPU at full size: a tiny CPU run is not compared
            row["target_status"] = "" if args.tiny else target_status(row, target)
            rows[name] = row
            if args.out:  # after every row: a killed run keeps what it measured
                atomic_write_json(args.out, result, indent=2)
    print(format_table(rows))
    return result


if __name__ == "__main__":
    main()
