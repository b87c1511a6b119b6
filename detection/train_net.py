r"""Train (or evaluate) one detector of the MoCo detection-transfer recipe.

    python -m detection.train_net --config-file configs/detection/pascal_voc_R_50_C4_24k_moco.yaml \
        --num-gpus 8 MODEL.WEIGHTS output/moco_v2_200ep.pkl
    python -m detection.train_net --config-file ... --resume        # continue from last_checkpoint
    python -m detection.train_net --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python -m detection.train_net --config-file ... MODEL.WEIGHTS "" TRANSFER.INIT random

Every load is checked (detection/weights.py): the log says how many backbone (or, resuming and
evaluating, detector) tensors loaded, and a file that does not fill them stops the run before
iteration 0 with what the file looks like and the fix.

The main process writes ``<OUTPUT_DIR>/final_metrics.json`` (evaluation results, seed, trial)
once training and the final evaluation are done; ``detection.trials`` treats that file as the
mark of a finished run. ``--resume`` continues a run only with the config it was started with
(``run_config.yaml``, keys outside ``detection.config.RESUME_FREE_KEYS``), and one command
writes to an OUTPUT_DIR at a time (``OUTPUT_DIR/run.lock``).
"""

from common.known_warnings import filter_known_warnings

filter_known_warnings()  # before detectron2 is imported: it warns while importing

import logging
import os
import weakref

import detectron2.utils.comm as comm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    hooks,
)
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger

from common.errors import entry_point
from common.io import atomic_write, atomic_write_json
from common.launch import check_device, check_launch_args, launch_from_args
from common.locks import hold_output_dir
from common.runconfig import diff_lines, flatten_config, refuse_changes

from . import roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from .config import RESUME_FREE_KEYS, load_cfg, resolve_single_process, validate_schedule
from .datasets import check_datasets, register_from_config
from .launchers import watch_runner
from .precise_bn import PooledPreciseBN
from .speed import apply_speed_options
from .summary import FINAL_METRICS
from .weights import CheckedCheckpointer, check_init

logger = logging.getLogger("detection.train_net")  # not __name__: "__main__" under -m


class Trainer(DefaultTrainer):
    """DefaultTrainer with the evaluator chosen by the test set's ``evaluator_type`` and the
    ``TRANSFER`` speed options (channels_last, compiled res5, SGD implementation, TF32, AMP
    dtype, batch padding; docs/detection_speed.md)."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ (detectron2 0.7), except that DDP gets device_ids only for a
        # CUDA model: detectron2 always passes [local_rank], which torch refuses for CPU
        # modules, so several CPU processes (gloo) could not train.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()  # as DefaultTrainer: detectron2's logger was not set up
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cuda = cfg.MODEL.DEVICE.startswith("cuda")
        device_ids = [comm.get_local_rank()] if on_cuda else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        if cfg.SOLVER.AMP.ENABLED and cfg.TRANSFER.AMP_DTYPE == "bfloat16":
            self._trainer.precision = torch.bfloat16  # AMPTrainer autocasts to this dtype
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """detectron2's default hooks, with precise BN pooled over processes
        (:class:`detection.precise_bn.PooledPreciseBN`), so every rank evaluates, and the
        checkpoint holds, the same BN statistics. Returns the list of hooks."""
        return [
            PooledPreciseBN.from_hook(h) if type(h) is hooks.PreciseBN else h
            for h in super().build_hooks()
        ]

    @classmethod
    def build_model(cls, cfg):
        """detectron2's model with the ``TRANSFER`` speed options applied
        (:func:`detection.speed.apply_speed_options`). Returns the model on ``MODEL.DEVICE``."""
        return apply_speed_options(super().build_model(cfg), cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """Return PascalVOCDetectionEvaluator ("pascal_voc") or COCOEvaluator ("coco")."""
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        if evaluator_type == "coco":
            output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        raise NotImplementedError(f"no evaluator for {dataset_name} (type {evaluator_type})")

    @classmethod
    def build_optimizer(cls, cfg, model):
        """detectron2's SGD (its parameter groups and hyper-parameters; ``TRANSFER.SGD_IMPL``
        picks foreach, fused or for-loop kernels), or AdamW over the same parameter groups
        (``TRANSFER.OPTIMIZER``; both checked when the config was loaded). Returns the
        optimizer."""
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        if cfg.TRANSFER.OPTIMIZER == "AdamW":
            # fused: one kernel for the whole update, CPU and CUDA (measured: docs/tiny_recipe.md)
            optimizer = torch.optim.AdamW(
                params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, fused=True
            )
            return maybe_add_gradient_clipping(cfg, optimizer)
        impl = cfg.TRANSFER.SGD_IMPL
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            # detectron2's build_optimizer passes foreach=True; fused and foreach are exclusive
            foreach=impl == "foreach",
            fused=impl == "fused" or None,
        )
        return maybe_add_gradient_clipping(cfg, optimizer)

    def resume_or_load(self, resume=True):
        """DefaultTrainer's resume-or-load through :class:`detection.weights.CheckedCheckpointer`:
        logs how many tensors loaded and stops before iteration 0 when the backbone (a new
        run) or the detector (resuming ``last_checkpoint``) did not load completely."""
        saver = self.checkpointer
        checked = CheckedCheckpointer(
            saver.model, saver.save_dir, cfg=self.cfg, **saver.checkpointables
        )
        checked.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if checked.resuming:
            self.start_iter = self.iter + 1  # the checkpoint holds the iteration that finished

    def train(self):
        """Train, then return the results of the final evaluation ({} without test sets).

        DefaultTrainer.train returns them only when TEST.EXPECTED_RESULTS is set; its
        evaluation hook keeps the latest results in ``_last_eval_results`` either way.
        """
        super().train()
        return getattr(self, "_last_eval_results", None) or {}


RUN_CONFIG = "run_config.yaml"  # the config of the run whose checkpoints OUTPUT_DIR holds


def check_resume_config(cfg):
    """Refuse to resume the checkpoint in ``cfg.OUTPUT_DIR`` with a config that changes its run.

    Compares ``cfg`` with the run's record (``run_config.yaml``; in folders written before it
    existed, detectron2's ``config.yaml`` of the previous start, read before this start
    overwrites it) on every key outside :data:`detection.config.RESUME_FREE_KEYS`; keys the
    record lacks count with their defaults. No-op without a ``last_checkpoint``. Returns None;
    raises :class:`common.runconfig.ChangedRunError` listing each change (old -> new).
    """
    folder = cfg.OUTPUT_DIR
    if not os.path.exists(os.path.join(folder, "last_checkpoint")):
        return
    for name in (RUN_CONFIG, "config.yaml"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            break
    else:
        logger.warning("%s holds no run config: cannot check that --resume is the same run", folder)
        return
    with open(path) as f:
        record = CfgNode.load_cfg(f)
    old = flatten_config(load_cfg())
    old.update(flatten_config(record))
    new = flatten_config(cfg)
    keys = (set(old) | set(new)) - set(RESUME_FREE_KEYS)
    refuse_changes(
        f"{path} (the config of the checkpoints in {folder})",
        diff_lines(old, new, keys),
        "Set these back to continue that run, or start a new run in a new OUTPUT_DIR (or "
        "without --resume, which starts from MODEL.WEIGHTS and overwrites this folder's "
        "checkpoints).",
    )


def record_run_config(cfg):
    """Write ``cfg`` to ``<OUTPUT_DIR>/run_config.yaml`` (main process, atomically): the
    config :func:`check_resume_config` compares a later ``--resume`` with."""
    if comm.is_main_process():
        text = cfg.dump()
        atomic_write(os.path.join(cfg.OUTPUT_DIR, RUN_CONFIG), lambda f: f.write(text), text=True)


def setup(args):
    """Build the frozen config from ``args`` (config file + KEY VALUE overrides), adjust it to
    the number of processes, refuse a ``--resume`` that would change the run, register the data
    sets it names and set up logging/seeding."""
    watch_runner()  # die with the trial runner, if one started this process
    cfg = load_cfg(args.config_file, args.opts)
    notes = resolve_single_process(cfg, comm.get_world_size())
    cfg.freeze()
    if not args.eval_only:
        validate_schedule(cfg)  # fvcore would refuse it at iteration 0, after the data scan
    if args.resume and not args.eval_only:
        check_resume_config(cfg)  # before default_setup rewrites config.yaml
    default_setup(cfg, args)  # logger, seed (SEED + rank), config.yaml in OUTPUT_DIR
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detection")
    for note in notes:
        logger.info("Config adjusted: %s", note)
    if cfg.MODEL.DEVICE == "cpu" and cfg.TRANSFER.CPU_THREADS > 0:
        torch.set_num_threads(cfg.TRANSFER.CPU_THREADS)
    register_from_config(cfg)
    check_datasets(cfg)  # every VOC split of DATASETS.TRAIN/TEST, before iteration 0
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    check_init(cfg, args.eval_only, resuming)  # MODEL.WEIGHTS / TRANSFER.INIT, before the model
    return cfg


def write_final_metrics(cfg, results):
    """Write ``results`` with the seed and trial index to ``<OUTPUT_DIR>/final_metrics.json``
    (main process only; written to a temporary name first so a kill never leaves half a file).
    """
    if not comm.is_main_process():
        return
    record = {
        "results": results,
        "seed": cfg.SEED,
        "trial": cfg.TRANSFER.TRIAL,
        "max_iter": cfg.SOLVER.MAX_ITER,
        "weights": cfg.MODEL.WEIGHTS,
    }
    path = os.path.join(cfg.OUTPUT_DIR, FINAL_METRICS)
    atomic_write_json(path, record, indent=2, sort_keys=True)


def run(args):
    """Per-process body launched by detectron2's ``launch``: train then evaluate, or evaluate
    only. Returns the evaluation results ({"bbox": {"AP", "AP50", "AP75", ...}})."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = CheckedCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg, eval_only=True)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    record_run_config(cfg)  # checked by setup() already when resuming
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    write_final_metrics(cfg, results)
    return results


@entry_point(
    output="OUTPUT_DIR",
    interrupted="rerun the same command with --resume to continue from the last checkpoint",
)
def main(argv=None):
    """Command-line entry point (``moco-detect``): parse ``argv`` and launch :func:`run` on
    ``--num-gpus`` processes per machine, holding ``OUTPUT_DIR/run.lock`` in this launching
    process (first machine only), so that the processes of one run share one lock and a second
    command on the folder exits with status 2, naming the first. Returns None."""
    parser = default_argument_parser()
    args = parser.parse_args(argv)
    check_launch_args(parser, args)
    cfg = load_cfg(args.config_file, args.opts)
    check_device(cfg.MODEL.DEVICE, args.num_gpus)
    with hold_output_dir(cfg.OUTPUT_DIR, enabled=args.machine_rank == 0):
        launch_from_args(run, args)


if __name__ == "__main__":
    main()
