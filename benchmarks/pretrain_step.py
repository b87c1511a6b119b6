"""Benchmark of the MoCo training step and of the data pipeline on the current device.

Prints a table and writes JSON. Rows:

- ``step/fp32-reference``: plain fp32 MoCo step (contiguous tensors, no autocast, eager, the
  per-parameter SGD loop);
- ``step/optimized``: the step as training runs it (on CUDA: channels_last + autocast + fused
  SGD; foreach SGD on CPU), eager; ``step/optimized (MODE)`` for each ``--compile MODE``: both
  encoders compiled as SOLVER.COMPILE does (``--compile "" reduce-overhead`` gives both rows).
  Both rows use the product's split BN with ``--key-bn-splits`` sub-batches (MODEL.KEY_BN_SPLITS)
  and its foreach momentum update. ``first_steps_s`` is the time of the warm-up steps (with
  ``--compile``: compilation; use ``--warmup 3`` or more for reduce-overhead's graph capture);
- ``data/pil``: per-image PIL decode + two aug+ views, one process (= one loader worker);
- ``data/batched``: PIL decode to a uint8 square + batched tensor aug+ of two views on the device;
- ``data/device-decode``: the "device" pipeline's decoding alone (``DeviceInput.decode``: one
  batched ``torchvision.io.decode_jpeg`` call, nvJPEG on CUDA, the CPU decoder on the CPU);
- ``data/device``: the "device" pipeline as training runs it, in line (decode, crops of the full
  image, colour stage of two views; ``DeviceInput.views``). On CUDA the JSON's
  ``device_views_host_syncs`` counts the ATen calls in one ``views`` call that make the host wait
  for the device (``torch.cuda.set_sync_debug_mode``); the pipeline is meant to have none, so
  that it can run ahead of the step (INPUT.PREFETCH).

``--rows`` runs only the rows whose names start with one of its values; ``--data-dir`` takes
the data rows' JPEGs from a folder (e.g. the ImageNet-sized set of ``pretrain_e2e.py``) and
``--data-batch`` sets their batch apart from the step's.

Examples::

    python benchmarks/pretrain_step.py --device cpu --arch resnet50 --width-per-group 16 \
        --size 64 --batch 32 --iters 5 --out benchmarks/results/pretrain_step_cpu.json
    python benchmarks/pretrain_step.py --device cuda --size 224 --batch 256 --amp bf16 \
        --key-bn-splits 8 --compile default
    python benchmarks/pretrain_step.py --device cuda --batch 32 --compile "" reduce-overhead \
        --rows step/optimized data/device --data-dir /tmp/jpegs --data-batch 256
"""

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common.configs import COMPILE_MODES  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from pretrain import builder  # noqa: E402
from pretrain.augment import BatchedMocoAug, TwoCropsTransform, moco_transform  # noqa: E402
from pretrain.builder import MoCo, build_encoder_factory, compile_encoders  # noqa: E402
from pretrain.config import get_pretrain_cfg  # noqa: E402
from pretrain.data import LoadAsUint8  # noqa: E402
from pretrain.device_input import DeviceInput, EncodedImage, collate_encoded  # noqa: E402
from pretrain.distributed import select_device  # noqa: E402
from pretrain.train_net import build_optimizer  # noqa: E402
from pretrain.views import ViewGenerators  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def bench_step(args, device, optimized: bool, compile_mode: str = "") -> dict:
    """Images/s and peak memory of MoCo steps (forward, backward, SGD) on random images;
    ``compile_mode`` (SOLVER.COMPILE) applies to the optimized step only."""
    torch.manual_seed(0)
    kwargs = {"width_per_group": args.width_per_group} if args.width_per_group else {}
    model = MoCo(
        build_encoder_factory(args.arch, **kwargs),
        K=args.K,
        m=0.999,
        T=0.2,
        mlp=True,
        key_bn_splits=args.key_bn_splits,
    )
    model = model.to(device)
    channels_last = optimized and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    compile_mode = compile_mode if optimized else ""
    torch._dynamo.reset()  # each compiled row compiles afresh (its first_steps_s)
    compile_encoders(model, compile_mode)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp) if optimized else None
    if device.type == "cpu" and not args.cpu_amp:
        amp = None  # CPU autocast is slower than fp32 for these convs; opt in with --cpu-amp
    params = [p for p in model.parameters() if p.requires_grad]
    if optimized:  # as training builds it: fused on CUDA, foreach on CPU
        cfg = get_pretrain_cfg()
        cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.9, 0.0
        opt = build_optimizer(cfg, params)
    else:
        opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, foreach=False)
    for group in opt.param_groups:
        group["lr"] = 0.03
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    x = torch.randn(2, args.batch, 3, args.size, args.size, device=device)
    views = [x[0], x[1]]  # two NxCxHxW batches; channels_last applies to 4-D tensors only
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    del x
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cuda_graphs = compile_mode == "reduce-overhead" and device.type == "cuda"
    times = []
    for _ in range(args.warmup + args.iters):
        _sync(device)
        t = time.perf_counter()
        if cuda_graphs:  # as the training loop does at each step
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(views[0], views[1])["loss"]
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    sec = float(np.median(times[args.warmup :]))
    return {
        "images_per_s": args.batch / sec,
        "sec_per_step": sec,
        "first_steps_s": [round(t, 3) for t in times[: args.warmup]],
        "peak_mem_mib": _peak_mem_mib(device),
        "amp": str(amp).replace("torch.", "") if amp else "fp32",
        "channels_last": channels_last,
        "compile": compile_mode,
        "key_bn_splits": args.key_bn_splits,
    }


def _write_jpegs(root: str, n: int, side: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = (rng.random((side, side, 3)) * 64 + np.linspace(0, 190, side)[:, None, None]).astype(
            np.uint8
        )
        p = os.path.join(root, f"{i:05d}.jpg")
        Image.fromarray(arr).save(p, quality=90)
        paths.append(p)
    return paths


def _find_jpegs(root: str, n: int) -> list:
    """The first ``n`` JPEGs under ``root`` (sorted, any depth). Raises SystemExit if none."""
    paths = []
    for folder, _, files in sorted(os.walk(root)):
        paths += [
            os.path.join(folder, f) for f in sorted(files) if f.lower().endswith((".jpg", ".jpeg"))
        ]
    if not paths:
        raise SystemExit(f"--data-dir {root}: no .jpg/.jpeg files found; give a JPEG folder")
    return paths[:n]


def bench_data(args, device, paths, wanted=lambda name: True) -> dict:
    """Images/s of one process for each data path (decode + two augmented views) whose row
    name ``wanted`` accepts, at batch ``args.data_batch``; on CUDA also the host syncs of one
    ``DeviceInput.views`` call ("data/device host syncs") when a device row is wanted."""
    results, bs = {}, args.data_batch
    if wanted("data/pil"):
        pil_tf = TwoCropsTransform(moco_transform("aug+", args.size))
        t = time.perf_counter()
        for p in paths:
            pil_tf(Image.open(p).convert("RGB"))
        results["data/pil"] = len(paths) / (time.perf_counter() - t)

    aug = BatchedMocoAug("aug+", args.size)
    gen = torch.Generator(device=device).manual_seed(0)
    if wanted("data/batched"):
        load = LoadAsUint8(int(round(args.size * 1.15)))
        _sync(device)
        t = time.perf_counter()
        for s in range(0, len(paths), bs):
            batch = torch.stack([load(Image.open(p).convert("RGB")) for p in paths[s : s + bs]])
            batch = batch.to(device)
            aug(batch, gen), aug(batch, gen)
        _sync(device)
        results["data/batched"] = len(paths) / (time.perf_counter() - t)
    if not (wanted("data/device-decode") or wanted("data/device")):
        return results

    # the "device" pipeline as training runs it: byte batches -> DeviceInput (decode, crops of
    # the full image, colour stage); on the CPU with the CPU decoder
    def read(path):
        with open(path, "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        return EncodedImage(data, path), torch.zeros(2, dtype=torch.long)

    encoded = [
        collate_encoded([read(p) for p in paths[s : s + bs]])[0] for s in range(0, len(paths), bs)
    ]
    dev_input = DeviceInput(aug, device)
    generators = ViewGenerators(colour=gen, crop=torch.Generator().manual_seed(0))
    dev_input.views(encoded[0], generators)  # first call: decoder set-up
    if device.type == "cuda":  # ATen calls that make the host wait for the device, per batch
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dev_input.views(encoded[0], generators)
        torch.cuda.set_sync_debug_mode(0)
        syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
        results["data/device host syncs"] = len(syncs)
    for name, work in (
        ("data/device-decode", lambda b: dev_input.decode(b.files(), b.paths, b.headers)),
        ("data/device", lambda b: dev_input.views(b, generators)),
    ):
        if not wanted(name):
            continue
        _sync(device)
        t = time.perf_counter()
        for batch in encoded:
            work(batch)
        _sync(device)
        results[name] = len(paths) / (time.perf_counter() - t)
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--arch", default="resnet50", help="torchvision ResNet name")
    p.add_argument("--width-per-group", type=int, default=0, help="16 = thin ResNet-50")
    p.add_argument("--size", type=int, default=224, help="crop size")
    p.add_argument("--batch", type=int, default=256, help="batch per step (one device)")
    p.add_argument("--K", type=int, default=65536, help="queue length")
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"], help="CUDA autocast")
    p.add_argument("--cpu-amp", action="store_true", help="also autocast the optimized CPU step")
    p.add_argument(
        "--compile",
        nargs="+",
        default=[""],
        choices=list(COMPILE_MODES),
        help="SOLVER.COMPILE modes of the optimized rows, one row each ('' = eager)",
    )
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend ('eager' traces without code generation: CPU checks)",
    )
    p.add_argument(
        "--key-bn-splits", type=int, default=1, help="MODEL.KEY_BN_SPLITS (8 = one GPU at 256)"
    )
    p.add_argument("--iters", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rows", nargs="+", default=None, help="only rows whose name starts so")
    p.add_argument("--data-images", type=int, default=256, help="JPEGs for the data rows")
    p.add_argument("--data-dir", default="", help="take the data rows' JPEGs from this folder")
    p.add_argument("--data-batch", type=int, default=0, help="batch of the data rows (--batch)")
    p.add_argument("--source-side", type=int, default=0, help="JPEG side (default 2 x size)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="", help="JSON output path")
    return p


def _step_name(mode: str) -> str:
    return f"step/optimized ({mode})" if mode else "step/optimized"


def main(argv=None) -> dict:
    """Run the benchmark with command-line options; print a table, write JSON (after every
    row, so that a run cut short keeps what it measured), return the result dict."""
    args = build_parser().parse_args(argv)
    args.data_batch = args.data_batch or args.batch
    builder.COMPILE_BACKEND = args.compile_backend
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def wanted(name):
        return args.rows is None or any(name.startswith(r) for r in args.rows)

    rows = {}
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": vars(args),
        "rows": rows,
        "device_views_host_syncs": None,
    }

    def save():
        if args.out:
            atomic_write_json(args.out, result, indent=2)

    if wanted("step/fp32-reference"):
        rows["step/fp32-reference"] = bench_step(args, device, optimized=False)
        save()
    for mode in args.compile:
        if wanted(_step_name(mode)):
            rows[_step_name(mode)] = bench_step(args, device, optimized=True, compile_mode=mode)
            save()
    if any(wanted(f"data/{n}") for n in ("pil", "batched", "device-decode", "device")):
        with tempfile.TemporaryDirectory() as tmp:
            if args.data_dir:
                paths = _find_jpegs(args.data_dir, args.data_images)
            else:
                paths = _write_jpegs(tmp, args.data_images, args.source_side or 2 * args.size)
            data = bench_data(args, device, paths, wanted)
        result["device_views_host_syncs"] = data.pop("data/device host syncs", None)
        for name, ips in data.items():
            rows[name] = {"images_per_s": ips, "batch": args.data_batch, "images": len(paths)}
        save()
    print(f"{'row':32s} {'images/s':>10s} {'peak MiB':>10s}  notes")
    for name, r in rows.items():
        mem = f"{r['peak_mem_mib']:10.0f}" if "peak_mem_mib" in r else " " * 10
        notes = ""
        if "amp" in r:
            notes = (
                f"{r['amp']}, channels_last={r['channels_last']}, "
                f"compile={r['compile'] or 'off'}, splits={r['key_bn_splits']}"
            )
        print(f"{name:32s} {r['images_per_s']:10.1f} {mem}  {notes}")
    syncs = result["device_views_host_syncs"]
    if syncs is not None:
        print(f"host syncs in one DeviceInput.views call (torch.cuda sync debug mode): {syncs}")
    return result


if __name__ == "__main__":
    main()
