r"""Every GPU claim of the project in one call: does each CUDA path run, and how fast are the
headline numbers? Entry point: ``benchmarks/gpu_check.sh`` (the header there has the time budget
of each stage). Every stage is one of the project's public commands or benchmark scripts, under
its own time limit and a shared deadline (``--budget-s``); see benchmarks/check_runner.py.

    benchmarks/gpu_check.sh                        # one GPU: offline install, then every stage
    benchmarks/gpu_check.sh --device cpu --tiny    # the same stages at tiny size (the test suite)

Outputs in ``--out`` (default ``$OUT``, else output/gpu_check): gpu_check.json (rows, stages,
the benchmarks' own JSON), gpu_check.txt (the table, also printed last) and
gpu_check_logs.tar.gz. Scratch (generated data, runs, compile caches) in ``--work``.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from check_rows import (  # noqa: E402
    chain_rows,
    detection_rows,
    e2e_rows,
    e2e_smoke_rows,
    step_rows,
    warm_rows,
)
from check_runner import Runner, Stage, python_env  # noqa: E402

DET_1GPU = "configs/detection/pascal_voc_R_50_C4_24k_moco_1gpu.yaml"
DET_TINY = "configs/detection/tiny_synthetic.yaml"
PRE_TINY = "configs/pretrain/tiny_synthetic.yaml"


def environment(path, device):
    """Write the versions and the device of this machine to ``path`` (JSON) and print
    nvidia-smi; exit status 1 when ``device`` is cuda and CUDA is not available."""
    import cv2
    import detectron2
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    info = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
        "opencv": cv2.__version__,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "gpu_memory_gib": (
            round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None
        ),
    }
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps(info, indent=2))
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi"], check=False)
    if device == "cuda" and not cuda:
        raise SystemExit(
            f"torch {torch.__version__} sees no CUDA device; run the check on the GPU machine "
            "or pass --device cpu --tiny"
        )


def sizes(tiny):
    """The sizes of every stage: the full-scale ones, or the tiny CPU ones (``tiny``)."""
    if tiny:
        return dict(
            images=32, image_size="80x60", cls=["4", "8", "4", "64"],
            voc=["--tiny", "--images", "4", "--infer-images", "2"],
            e2e=["--tiny", "--threads", "1", "--compile-backend", "eager"],
            e2e_opts=["MODEL.ARCH", "resnet18", "MODEL.WIDTH_PER_GROUP", "64"],
            step=["--device", "cpu", "--arch", "resnet18", "--size", "32", "--K", "64",
                  "--threads", "1", "--compile-backend", "eager", "--warmup", "1", "--iters", "1"],
            step_batch=["--batch", "4", "--data-images", "8", "--data-batch", "4"],
            warm_big=["--batch", "8", "--key-bn-splits", "2"], warm_small=["--batch", "4"],
            det=["--tiny", "--iters", "1", "--warmup", "1", "--threads", "1"],
            det_config=DET_TINY, det_iters="2", trial_iters="2",  # > SOLVER.STEPS (1,)
            det_opts=["MODEL.DEVICE", "cpu", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
                      "TEST.PRECISE_BN.NUM_ITER", "1"],
            pretrain=["--config-file", PRE_TINY, "MODEL.DEVICE", "cpu", "INPUT.SIZE", "64",
                      "SOLVER.BATCH_SIZE", "8", "MODEL.KEY_BN_SPLITS", "2", "MODEL.K", "8",
                      "DATA.NUM_WORKERS", "0", "DATA.CACHE_DECODED", "False", "CPU_THREADS", "1",
                      "SOLVER.MAX_ITERS_PER_EPOCH", "2", "TEST.KNN_SIZE", "64"],
            linear=["--crop-size", "64", "--batch-size", "8", "--workers", "0", "--epochs", "1",
                    "--device", "cpu"],
            trials=[],
        )  # fmt: skip
    return dict(
        images=256 * (8 + 20 + 1), image_size="500x375", cls=["8", "64", "16", "128"],
        voc=["--images", "64", "--infer-images", "18"],
        e2e=[], e2e_opts=[],
        step=["--device", "cuda", "--warmup", "5", "--iters", "20"],
        step_batch=["--batch", "32", "--data-images", "2048", "--data-batch", "256"],
        warm_big=["--batch", "256", "--key-bn-splits", "8"], warm_small=["--batch", "32"],
        det=["--iters", "10", "--warmup", "3", "--workers", "12"],
        det_config=DET_1GPU, det_iters="10", trial_iters="5",
        det_opts=["MODEL.DEVICE", "cuda", "SOLVER.IMS_PER_BATCH", "4",
                  "TEST.PRECISE_BN.NUM_ITER", "5", "DATALOADER.NUM_WORKERS", "4"],
        pretrain=["MODEL.DEVICE", "cuda", "INPUT.SIZE", "112", "SOLVER.BATCH_SIZE", "64",
                  "MODEL.KEY_BN_SPLITS", "8", "MODEL.K", "128", "DATA.NUM_WORKERS", "4",
                  "SOLVER.MAX_ITERS_PER_EPOCH", "4", "TEST.KNN_SIZE", "112"],
        linear=["--crop-size", "112", "--batch-size", "64", "--workers", "4", "--epochs", "2",
                "--device", "cuda"],
        trials=["--gpus-per-trial", "1"],
    )  # fmt: skip


def build_plan(args):
    """The phases of the check (see check_runner): setup; data, cold compiles and the smoke
    stages side by side; the timed stages alone, one after another."""
    py, w, s = args.python, args.work, sizes(args.tiny)
    data, bench, runs = (os.path.join(w, d) for d in ("data", "bench", "runs"))
    jpegs, cls, voc = (os.path.join(data, d) for d in ("jpegs", "cls", "voc"))
    jpeg_args = ["--data-root", jpegs, "--images", s["images"], "--image-size", s["image_size"]]
    gpu_opts = ["INPUT.PREFETCH", "2", "SOLVER.AMP", "bf16"]  # the CUDA defaults, stated
    pre_opts = gpu_opts + s["e2e_opts"]
    e2e = [py, "benchmarks/pretrain_e2e.py"] + s["e2e"] + jpeg_args
    step = [py, "benchmarks/pretrain_step.py"] + s["step"]
    det_common = s["det_opts"] + [
        "SOLVER.AMP.ENABLED", "True", "TRANSFER.VOC_LIKE_ROOT", voc,
        "DATASETS.TRAIN", "('synth_2007_trainval', 'synth_2012_trainval')",
        "DATASETS.TEST", "('synth_2007_test',)", "MODEL.ROI_HEADS.NUM_CLASSES", "6",
        "TRANSFER.REFERENCE", "", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "MODEL.WEIGHTS", os.path.join(runs, "moco_r50_c4.pkl"),
    ]  # fmt: skip
    pretrain_out = os.path.join(runs, "pretrain")
    pretrain = s["pretrain"] + [
        "DATA.TRAIN", f"{cls}/train", "DATA.KNN_TRAIN", f"{cls}/train", "DATA.KNN_VAL",
        f"{cls}/val", "TEST.KNN_PERIOD", "1", "INPUT.PIPELINE", "device", "SOLVER.EPOCHS", "2",
        "CHECKPOINT_PERIOD", "1", "LOG_PERIOD", "1", "OUTPUT_DIR", pretrain_out,
    ] + gpu_opts  # fmt: skip
    final_ckpt = os.path.join(pretrain_out, "checkpoint_0002.pth")

    def pretrain_cli(*flags):  # options before the KEY VALUE overrides
        return [py, "-m", "pretrain.train_net", *flags] + pretrain

    def out(name):
        return os.path.join(bench, f"{name}.json")

    setup = [[
        Stage("install", "setup", "offline install",
              ["bash", "benchmarks/lease_lib.sh", "install"], 120),
        Stage("environment", "setup", "environment",
              [py, "benchmarks/gpu_check.py", "--environment", out("environment"),
               "--device", args.device], 60),
    ]]  # fmt: skip
    warm = [
        [Stage("data-jpegs", "setup", "data: ImageNet-sized JPEGs",
               [py, "benchmarks/pretrain_e2e.py", "--make-data-only"] + jpeg_args,
               120, needs=("install",),
               reuse=(os.path.join(jpegs, f".complete_{s['images']}_{s['image_size']}"),))],
        [Stage("data-cls", "setup", "data: classification set",
               [py, "-m", "synthetic", "cls", cls, "--num-classes", s["cls"][0],
                "--train-per-class", s["cls"][1], "--val-per-class", s["cls"][2],
                "--image-size", s["cls"][3]],
               120, needs=("install",), reuse=(os.path.join(cls, "summary.json"),))],
        [Stage("data-voc", "setup", "data: VOC-format set",
               [py, "benchmarks/detection_speed.py", "--make-data-only", "--data-root", voc]
               + s["voc"], 120, needs=("install",), reuse=(os.path.join(voc, "classes.json"),))],
        [Stage("compile-default", "headline", "", step + s["warm_big"] + [
               "--compile", "default", "--rows", "step/optimized (default)", "--warmup", "2",
               "--iters", "1", "--out", out("compile_default")], 200, needs=("environment",),
               rows=warm_rows(out("compile_default"), "default", args.tiny),
               row_names=("compile time, SOLVER.COMPILE default",))],
        [Stage("compile-ro", "headline", "", step + s["warm_small"] + [
               "--compile", "reduce-overhead", "--rows", "step/optimized (reduce-overhead)",
               "--warmup", "4", "--iters", "1", "--out", out("compile_ro")], 200,
               needs=("environment",),
               rows=warm_rows(out("compile_ro"), "reduce-overhead", args.tiny),
               row_names=("compile time, SOLVER.COMPILE reduce-overhead",))],
    ]  # fmt: skip
    timed = [[
        Stage("e2e", "headline", "", e2e + ["--rows", "device eager", "device compiled",
              "--out", out("e2e"), "--opts"] + pre_opts, 180, needs=("data-jpegs",),
              rows=e2e_rows(out("e2e"), args.tiny), row_names=e2e_rows.names),
        Stage("step", "headline", "", step + s["step_batch"] + [
              "--compile", "", "reduce-overhead", "--rows", "step/optimized", "data/device",
              "--data-dir", jpegs, "--out", out("step")], 150, needs=("data-jpegs",),
              rows=step_rows(out("step"), args.tiny), row_names=step_rows.names),
        Stage("detection", "headline", "", [py, "benchmarks/detection_speed.py", "--data-root",
              voc, "--variants", "amp", "fp32", "--infer-images", "0", "--out",
              out("detection")] + s["det"], 150, needs=("data-voc",),
              rows=detection_rows(out("detection"), args.tiny), row_names=detection_rows.names),
    ]]  # fmt: skip
    pipelines = [[
        Stage("pipelines", "smoke", "", e2e + [
              "--rows", "pil eager", "pil compiled", "batched eager", "batched compiled",
              "--warmup", "1", "--iters", "2", "--out", out("pipelines"), "--opts"] + pre_opts,
              150, needs=("data-jpegs", "compile-default"), rows=e2e_smoke_rows(out("pipelines")),
              row_names=e2e_smoke_rows.names),
    ]]  # fmt: skip
    chain = chain_rows(pretrain_out, runs)
    smoke = pipelines + [
        [Stage("pretrain", "smoke", chain.PRETRAIN, pretrain_cli("--stop-after-epochs", "1"), 120,
               needs=("data-cls",), rows=chain.pretrain),
         Stage("resume", "smoke", chain.RESUME, pretrain_cli(), 120, needs=("pretrain",),
               rows=chain.resume, row_names=(chain.RESUME, chain.KNN)),
         Stage("convert", "smoke", chain.CONVERT, [py, "-m", "convert", final_ckpt,
               os.path.join(runs, "moco_r50_c4.pkl"), "--overwrite"], 60, needs=("resume",)),
         Stage("detect", "smoke", chain.DETECT, [py, "-m", "detection.train_net",
               "--config-file", s["det_config"], "OUTPUT_DIR", os.path.join(runs, "detect"),
               "SOLVER.MAX_ITER", s["det_iters"]] + det_common, 150,
               needs=("convert", "data-voc"), rows=chain.detect)],
        [Stage("linear", "smoke", chain.LINEAR, [py, "-m", "evaluation.linear", "--checkpoint",
               final_ckpt, "--data", cls, "--cached-features", "--output-dir",
               os.path.join(runs, "linear")] + s["linear"], 120, needs=("resume",),
               rows=chain.linear),
         Stage("trials", "smoke", chain.TRIALS, [py, "-m", "detection.trials", "--config-file",
               s["det_config"], "--output-dir", os.path.join(runs, "trials"), "--num-trials",
               "2", "--reference", "none", "--log-period", "10"] + s["trials"] + det_common
               + ["SOLVER.MAX_ITER", s["trial_iters"]], 180, needs=("convert", "data-voc"),
               rows=chain.trials)],
        [Stage("demo", "smoke", chain.DEMO, [py, "-m", "demo", "--preset", "smoke", "--seeds",
               "0", "--output-dir", os.path.join(runs, "demo")], 180, needs=("environment",),
               rows=chain.demo)],
    ]  # fmt: skip
    # the untimed stages side by side (pipelines after compile-default: a warm compile
    # cache), then the timed ones alone
    return [setup, warm + smoke, timed]


def select(phases, keys):
    """``phases`` with only the stages named in ``keys`` and those they need, transitively,
    plus install and environment (all stages when ``keys`` is empty). Raises SystemExit naming
    an unknown key."""
    stages = {st.key: st for ph in phases for stream in ph for st in stream}
    unknown = sorted(set(keys) - set(stages))
    if unknown:
        raise SystemExit(f"--only {' '.join(unknown)}: no such stage; choose from {sorted(stages)}")
    keep, todo = set(), (list(keys) + ["install", "environment"]) if keys else list(stages)
    while todo:
        key = todo.pop()
        if key not in keep:
            keep.add(key)
            todo += stages[key].needs
    kept = [[[st for st in stream if st.key in keep] for stream in ph] for ph in phases]
    return [[stream for stream in ph if stream] for ph in kept]


def build_parser():
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where to run")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU checks of the script)")
    p.add_argument("--budget-s", type=float, default=0, help="deadline (330 s; tiny 900 s)")
    p.add_argument("--out", default="", help="outputs ($OUT, else output/gpu_check)")
    p.add_argument("--work", default="", help="scratch: data, runs, caches (/tmp/gpu_check)")
    p.add_argument("--python", default=os.environ.get("PY", sys.executable), help="of stages")
    p.add_argument("--site", default=os.environ.get("SITE", "/tmp/site"), help="wheels go here")
    p.add_argument("--only", nargs="+", default=[], help="these stages and what they need")
    p.add_argument("--environment", default="", help=argparse.SUPPRESS)  # the environment stage
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Run the check; print the table last. Returns 0 when every row is OK, else 1."""
    args = build_parser().parse_args(argv)
    if args.environment:
        environment(args.environment, args.device)
        return 0
    args.budget_s = args.budget_s or (900.0 if args.tiny else 330.0)
    args.out = os.path.abspath(args.out or os.environ.get("OUT") or "output/gpu_check")
    args.work = os.path.abspath(args.work or os.path.join("/tmp", "gpu_check"))
    for stale in ("runs", "bench", "logs"):  # data and compile caches are kept for a rerun
        shutil.rmtree(os.path.join(args.work, stale), ignore_errors=True)
    for d in ("bench", "runs"):
        os.makedirs(os.path.join(args.work, d), exist_ok=True)
    cache = os.path.join(args.work, "cache")
    warm_cache = os.path.isdir(cache) and bool(os.listdir(cache))
    env = python_env(args.site, REPO, {
        "PY": args.python, "SITE": args.site,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor"),
        "TRITON_CACHE_DIR": os.path.join(cache, "triton"),
    })  # fmt: skip
    if args.tiny:
        env["OMP_NUM_THREADS"] = "1"  # small shared CPUs: threads spin-waiting cost more
    bench_dir = os.path.join(args.work, "bench")

    def extra():  # the benchmarks' JSON so far, and the machine's versions at the top
        found = {}
        for name in sorted(os.listdir(bench_dir)):
            try:
                with open(os.path.join(bench_dir, name)) as f:
                    found[name[:-5]] = json.load(f)
            except (OSError, ValueError):
                continue
        env_info = found.get("environment", {})
        return {"device_name": env_info.get("device_name", "?"),
                "torch": env_info.get("torch", "?"), "benchmarks": found}  # fmt: skip

    header = {
        "mode": f"{args.device}{', tiny' if args.tiny else ''}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "compile_cache_warm_at_start": warm_cache,
    }
    # tiny runs share small CPUs with other jobs: the limits guard against hangs, not speed
    runner = Runner(args.out, os.path.join(args.work, "logs"), args.budget_s, env, REPO, header,
                    extra, limit_scale=3.0 if args.tiny else 1.0)  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped check still writes its table
    runner.run(select(build_plan(args), args.only))
    runner.write()
    print(f"gpu_check: {args.out}/gpu_check.json, gpu_check.txt, gpu_check_logs.tar.gz")
    with open(os.path.join(args.out, "gpu_check.txt")) as f:
        print(f.read(), end="")
    return 0 if all(r["status"] == "OK" for r in runner.all_rows()) else 1


if __name__ == "__main__":
    sys.exit(main())
