"""MoCo pretraining entry point: set-up, epochs, checkpoints, kNN monitor, launch.

One process (CPU or one GPU)::

    python -m pretrain.train_net --config-file configs/pretrain/tiny_synthetic.yaml

8 GPUs on one machine (detectron2 launch), or torchrun on many machines::

    moco-pretrain --config-file configs/pretrain/moco_v2_200ep.yaml --num-gpus 8 DATA.TRAIN ...
    torchrun --nnodes 2 --nproc-per-node 8 ... -m pretrain.train_net --config-file ...

SLURM, one task per GPU on 2 nodes (pretrain/slurm.py; returns once the job is queued)::

    moco-pretrain --slurm --num-machines 2 --num-gpus 8 --config-file ... DATA.TRAIN ...

A run restarts automatically from ``OUTPUT_DIR/last.pth`` when it exists, and only with the
config it was started with (``pretrain.config.RUN_KEYS``). One run writes to an OUTPUT_DIR at a
time (``OUTPUT_DIR/run.lock``, see ``common.locks``).
"""

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # before detectron2 is imported: it warns while importing

import argparse
import json
import logging
import math
import os

import torch
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.events import EventStorage, JSONWriter, TensorboardXWriter

from common.cli import at_least
from common.errors import entry_point
from common.files import class_root_problem
from common.io import atomic_write
from common.launch import (
    add_launch_args,
    check_device,
    check_launch_args,
    launch_from_args,
    run_then_close,
)
from common.locks import hold_output_dir

from .builder import build_moco, check_key_bn_splits, compile_encoders
from .checkpoint import (
    LAST,
    check_same_run,
    checkpoint_name,
    load_resume_checkpoint,
    restore,
    resume_hint,
    save_checkpoint,
    unwrap,
    weights_problem,
)
from .config import load_cfg
from .data import build_train_dataset, build_train_loader, sample_seed
from .distributed import maybe_init_from_env, select_device
from .engine import amp_dtype, steps_per_epoch, train_one_epoch
from .knn import knn_sets, knn_top1
from .logs import setup_named_logger
from .meter import ProgressPrinter, TrainMeter
from .prefetch import prefetch_depth
from .slurm import add_args as add_slurm_args
from .slurm import submit_pretraining
from .views import ViewGenerators, build_view_maker

logger = logging.getLogger("pretrain.train_net")  # also when run as __main__


def build_parser() -> argparse.ArgumentParser:
    """detectron2-style arguments plus resume controls; trailing ``KEY VALUE`` overrides."""
    p = argparse.ArgumentParser(description="MoCo v1/v2 pretraining")
    p.add_argument("--config-file", default="", metavar="FILE", help="YAML under configs/pretrain")
    p.add_argument(
        "--resume",
        default="",
        metavar="PATH",
        help="checkpoint to resume from; without it, OUTPUT_DIR/last.pth is used if it exists",
    )
    p.add_argument("--no-auto-resume", action="store_true", help="ignore OUTPUT_DIR/last.pth")
    p.add_argument(
        "--stop-after-epochs",
        type=at_least(1, why=" (leave the flag out to train all SOLVER.EPOCHS)"),
        default=None,
        metavar="N",
        help="stop (with a checkpoint) after N finished epochs; the schedule still "
        "spans SOLVER.EPOCHS, so a later resume continues it (use on preemptible time slots)",
    )
    add_launch_args(p)
    add_slurm_args(p)  # --slurm: submit as a SLURM job (nodes/GPUs: --num-machines/--num-gpus)
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return p


def _warn_queue_size(cfg, n_images: int) -> None:
    if cfg.MODEL.K * 4 > n_images:
        suggestion = 2 ** max(int(math.log2(max(n_images // 4, 1))), 0)
        logger.warning(
            "MODEL.K=%d is not well below the %d training images (DATA.TRAIN): every image "
            "is a negative of its own views about %.1f times over while it stays in the queue. "
            "Set MODEL.K to at most a quarter of the images (e.g. MODEL.K %d) or add images.",
            cfg.MODEL.K,
            n_images,
            cfg.MODEL.K / n_images,
            suggestion,
        )


def _check_inputs(cfg, world: int):
    """Fail before training, naming the key, on inputs that would fail later.

    Returns the kNN monitor's two sets (:func:`pretrain.knn.knn_sets`, listed and compared
    now, so a missing folder or mismatched classes stop the run before epoch 1), or None.
    """
    for key in ("DATA.KNN_TRAIN", "DATA.KNN_VAL"):
        path = cfg.DATA[key.split(".")[1]]
        if path and not os.path.isdir(path):
            raise FileNotFoundError(
                f"{key}={path!r} is not a directory; give a labelled "
                "ImageFolder root or leave both kNN keys empty"
            )
    for key in ("DATA.TRAIN", "DATA.KNN_TRAIN", "DATA.KNN_VAL"):
        path = cfg.DATA[key.split(".")[1]]
        problem = path and os.path.isdir(path) and class_root_problem(path, key)
        if problem:  # train/ and val/ would become two classes and mix the splits
            raise ValueError(problem)
    per_proc = cfg.SOLVER.BATCH_SIZE // world
    what = f"per-process batch {per_proc} (SOLVER.BATCH_SIZE / {world} processes)"
    check_key_bn_splits(per_proc, cfg.MODEL.KEY_BN_SPLITS, what)
    if not cfg.DATA.KNN_TRAIN:
        return None
    return knn_sets(
        cfg.DATA.KNN_TRAIN,
        cfg.DATA.KNN_VAL,
        cfg.TEST.KNN_SIZE or cfg.INPUT.SIZE,
        keys=("DATA.KNN_TRAIN", "DATA.KNN_VAL"),
    )


def _knn(cfg, knn_data, model, device, storage, epoch: int, checkpoint: str) -> float:
    """The kNN monitor after ``epoch``'s checkpoint; a failure names that checkpoint."""
    try:
        acc = knn_top1(
            unwrap(model).encoder_q,
            *knn_data,
            batch_size=max(cfg.SOLVER.BATCH_SIZE // comm.get_world_size(), 1),
            workers=cfg.DATA.NUM_WORKERS,
            k=cfg.TEST.KNN_K,
            T=cfg.TEST.KNN_T,
            device=device,
        )
    except Exception as e:
        raise RuntimeError(
            f"The kNN monitor (DATA.KNN_TRAIN / DATA.KNN_VAL) failed after epoch {epoch}, "
            f"whose checkpoint {checkpoint} is written, so rerunning resumes from epoch "
            f"{epoch + 1}; set TEST.KNN_PERIOD 0 to train without the monitor. "
            f"{type(e).__name__}: {e}"
        ) from e
    storage.put_scalar("knn_top1", acc * 100, smoothing_hint=False)
    logger.info("Epoch %d: kNN top-1 %.2f%%", epoch, acc * 100)
    return acc


def _drop_metrics_after(path: str, iteration: int) -> None:
    """Keep only the lines of metrics.json ``path`` with an iteration below ``iteration``.

    A resumed run repeats the iterations after its checkpoint; their old lines are dropped so
    that every iteration appears once. The file is rewritten atomically
    (:func:`common.io.atomic_write`); lines that are not JSON objects (e.g. cut by a kill
    mid-write) are dropped too.
    """
    if not os.path.isfile(path):
        return
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
                ok = isinstance(rec, dict) and rec.get("iteration", iteration) < iteration
            except ValueError:
                ok = False
            if ok:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += line.strip() != ""
    if not dropped:
        return
    atomic_write(path, lambda f: f.writelines(kept), text=True)
    logger.info("Dropped %d metrics.json line(s) at or after iteration %d", dropped, iteration)


def train(cfg, resume: str = "", auto_resume: bool = True, stop_after_epochs=None) -> dict:
    """Pretrain MoCo as configured by ``cfg`` in the current process group.

    Resumes from ``resume`` or (``auto_resume``) from OUTPUT_DIR/last.pth, refusing a checkpoint
    whose run had another recipe (:func:`pretrain.checkpoint.check_same_run`). Stops after
    ``stop_after_epochs`` finished epochs when given (None or 0: all). Returns a dict with
    the final ``epoch``, ``iteration`` and, when the kNN monitor ran, ``knn_top1`` (0..1).
    """
    world, rank = comm.get_world_size(), comm.get_rank()
    device = select_device(cfg.MODEL.DEVICE)
    if device.type == "cpu" and cfg.CPU_THREADS:
        torch.set_num_threads(cfg.CPU_THREADS)
    knn_data = _check_inputs(cfg, world)
    dataset = build_train_dataset(cfg)
    _warn_queue_size(cfg, len(dataset))
    loader, sampler = build_train_loader(dataset, cfg, world, rank, device.type == "cuda")
    iters_per_epoch = steps_per_epoch(loader, cfg)

    torch.manual_seed(cfg.SEED)  # identical init on every rank, independent of set-up order
    model = build_moco(cfg).to(device)
    if device.type == "cuda" and cfg.SOLVER.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    compile_encoders(model, cfg.SOLVER.COMPILE)  # lazy: compiles on the first step
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg, params)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype(cfg, device) == torch.float16 else None

    start_epoch, iteration = 0, 0
    path, ckpt = None, {}
    if resume or auto_resume:
        # last.pth, or the newest readable checkpoint_NNNN.pth when last.pth is unusable
        path, ckpt = load_resume_checkpoint(cfg.OUTPUT_DIR, resume)
    if path:
        check_same_run(ckpt, cfg, path, iters_per_epoch)
        restore(ckpt, model, optimizer, scaler, path=path)
        start_epoch, iteration = ckpt["epoch"], ckpt["iteration"]
        logger.info("Resumed from %s at epoch %d, iteration %d", path, start_epoch, iteration)
        if comm.is_main_process():
            _drop_metrics_after(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), iteration)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    view_maker = build_view_maker(cfg, device)
    writers = []
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        writers = [
            ProgressPrinter(iters_per_epoch * cfg.SOLVER.EPOCHS),
            JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json")),
            TensorboardXWriter(cfg.OUTPUT_DIR),
        ]
    meter = TrainMeter(cfg, prefetch_depth(cfg, device), writers, dataset.paths)
    last_good = path or ""  # the checkpoint a diverged run resumes from
    end_epoch = cfg.SOLVER.EPOCHS
    if stop_after_epochs:
        end_epoch = min(end_epoch, stop_after_epochs)
    result = {"epoch": start_epoch, "iteration": iteration}
    with EventStorage(iteration) as storage:
        for epoch in range(start_epoch, end_epoch):
            # Everything random in an epoch (data order, augmentation, shuffle-BN permutations)
            # is a function of (SEED, epoch, rank), so a resumed run repeats it bit for bit.
            seed = sample_seed(cfg.SEED, epoch, rank) % 2**31
            torch.manual_seed(seed)
            sampler.set_epoch(epoch)
            try:
                iteration = train_one_epoch(
                    model,
                    loader,
                    optimizer,
                    scaler,
                    epoch,
                    iteration,
                    cfg,
                    view_maker=view_maker,
                    generators=ViewGenerators.seeded(seed, device),
                    meter=meter,
                )
            except FloatingPointError as e:  # the loss diverged: say where to resume from
                raise FloatingPointError(f"{e} {resume_hint(last_good)}") from None
            done = epoch + 1
            # Every rank checks its own weights (identical under DDP) so that all of them stop
            # together instead of waiting for a main process that refused to save.
            problem = weights_problem(unwrap(model).state_dict())
            if problem:
                raise FloatingPointError(
                    f"Weights diverged by the end of epoch {done} (iteration {iteration}): "
                    f"{problem}; no checkpoint written. Lower SOLVER.BASE_LR or add warm-up. "
                    + resume_hint(last_good)
                )
            if comm.is_main_process():
                args = (model, optimizer, scaler, done, iteration, cfg)
                save_checkpoint(os.path.join(cfg.OUTPUT_DIR, LAST), *args)
                if done % cfg.CHECKPOINT_PERIOD == 0 or done == cfg.SOLVER.EPOCHS:
                    save_checkpoint(os.path.join(cfg.OUTPUT_DIR, checkpoint_name(done)), *args)
            last_good = os.path.join(cfg.OUTPUT_DIR, LAST)
            # The monitor runs after the checkpoint: whatever happens to it, the epoch is kept.
            if (
                knn_data
                and cfg.TEST.KNN_PERIOD
                and (done % cfg.TEST.KNN_PERIOD == 0 or done == cfg.SOLVER.EPOCHS)
            ):
                result["knn_top1"] = _knn(cfg, knn_data, model, device, storage, done, last_good)
            meter.write()  # the epoch's last iteration, with the end-of-epoch metrics
            comm.synchronize()
            result.update(epoch=done, iteration=iteration)
    meter.close()
    if meter.skipped_images:
        logger.warning("%d unreadable image(s) were skipped in total", meter.skipped_images)
    return result


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    """SGD with momentum (the paper), or AdamW for tiny CPU runs; lr is set by the schedule.

    On CUDA the fused implementation (one kernel for all parameters), elsewhere the foreach
    (multi-tensor) one; both give the update of the per-parameter loop up to rounding.
    """
    params = list(params)
    on_cuda = bool(params) and all(p.is_cuda for p in params)
    impl = {"fused": True} if on_cuda else {"foreach": True}
    if cfg.SOLVER.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(params, lr=0.0, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **impl)
    return torch.optim.SGD(
        params, lr=0.0, momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **impl
    )


def setup(args):
    """Config from ``args`` (file + overrides), logger, config dump and seeds (default_setup)."""
    cfg = load_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    for name in ("pretrain", "evaluation"):
        setup_named_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name)
    return cfg


def run(args) -> dict:
    """Per-process body: set up, then train (called by ``launch`` or directly under torchrun)."""
    cfg = setup(args)
    return train(
        cfg,
        resume=args.resume,
        auto_resume=not args.no_auto_resume,
        stop_after_epochs=args.stop_after_epochs,
    )


@entry_point(
    output="OUTPUT_DIR",
    interrupted="rerun the same command to resume from OUTPUT_DIR/last.pth (the epoch in "
    "progress is redone)",
)
def main(argv=None) -> None:
    """Console script ``moco-pretrain``: torchrun-aware launch of :func:`run`, or with
    ``--slurm`` its submission as a SLURM job (:mod:`pretrain.slurm`).

    One lock per run on OUTPUT_DIR (``common.locks.hold_output_dir``): held by this launching
    process on the first machine, or by rank 0 under torchrun or in a SLURM job, so the other
    ranks of the same run start freely while a second run on the folder exits with status 2,
    naming the first.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check_launch_args(parser, args)
    if args.slurm:  # one task per GPU on --num-machines nodes; requeued jobs resume
        submit_pretraining(args)
        return
    cfg = load_cfg(args.config_file, args.opts)  # also fails early on typos
    if maybe_init_from_env():  # torchrun already started one process per GPU
        with hold_output_dir(cfg.OUTPUT_DIR, enabled=comm.get_rank() == 0):
            run_then_close(run, args)
        return
    check_device(cfg.MODEL.DEVICE, args.num_gpus)
    with hold_output_dir(cfg.OUTPUT_DIR, enabled=args.machine_rank == 0):
        launch_from_args(run, args)


if __name__ == "__main__":
    main()
