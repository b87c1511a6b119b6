"""The demo pipeline: each stage writes its outputs under one folder and is skipped (or resumed)
when they are already there, so an interrupted demo continues where it stopped."""

import json
import logging
import os
import time

import torch

from .presets import PRESETS, Preset

logger = logging.getLogger("demo")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_CFG = os.path.join(ROOT, "configs", "pretrain", "tiny_synthetic.yaml")
DETECT_CFG = os.path.join(ROOT, "configs", "detection", "tiny_synthetic.yaml")
STAGES = ("data", "pretrain", "knn", "convert", "detect", "report")


class Progress:
    """Stage log lines with elapsed time and an ETA that rescales the remaining stage estimates
    by how fast the finished stages ran compared with their estimates."""

    def __init__(self, estimates: dict):
        self.estimates, self.t0, self.spent, self.estimated_done = estimates, time.time(), {}, 0.0

    def eta(self) -> float:
        """Seconds still expected for the stages not yet finished."""
        left = sum(v for k, v in self.estimates.items() if k not in self.spent)
        done = sum(self.spent.values())
        # Rescale only once a minute of estimated work is done: a few seconds of data generation
        # say little about the machine's speed for the long stages.
        speed = done / self.estimated_done if self.estimated_done >= 60 else 1.0
        return left * speed

    def start(self, stage: str) -> None:
        i = STAGES.index(stage) + 1
        logger.info(
            "[%d/%d] %s: starting (elapsed %s, ETA %s)",
            i,
            len(STAGES),
            stage,
            _hms(time.time() - self.t0),
            _hms(self.eta()),
        )
        self._stage_t0 = time.time()

    def finish(self, stage: str, note: str = "") -> None:
        self.spent[stage] = time.time() - self._stage_t0
        self.estimated_done += self.estimates.get(stage, 0.0)
        note = f" ({note})" if note else ""
        logger.info("%s: done in %s%s", stage, _hms(self.spent[stage]), note)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:d}m{seconds % 60:02d}s"


def _write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def make_data(out: str, preset: Preset, seed: int) -> dict:
    """Generate (once) the classification and VOC-format sets under ``out/data``; returns their
    roots and summaries."""
    import synthetic

    data = os.path.join(out, "data")
    marker = os.path.join(data, "done.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    cls = synthetic.make_classification(
        os.path.join(data, "cls"),
        seed=seed,
        num_classes=preset.num_classes,
        train_per_class=preset.train_per_class,
        val_per_class=preset.val_per_class,
    )
    voc = synthetic.make_voc(
        os.path.join(data, "voc"),
        seed=seed,
        trainval_images=preset.voc_trainval,
        test_images=preset.voc_test,
    )
    info = {
        "cls": os.path.join(data, "cls"),
        "voc": os.path.join(data, "voc"),
        "cls_summary": cls,
        "voc_summary": voc,
    }
    _write_json(marker, info)
    return info


def pretrain_opts(out: str, preset: Preset, data: dict, seed: int) -> list:
    """Overrides of configs/pretrain/tiny_synthetic.yaml for this demo folder."""
    train, val = os.path.join(data["cls"], "train"), os.path.join(data["cls"], "val")
    # fmt: off
    return [
        *preset.pretrain_opts,
        "DATA.TRAIN", train,
        "DATA.KNN_TRAIN", train,
        "DATA.KNN_VAL", val,
        "TEST.KNN_PERIOD", "0",  # the knn stage measures both inits the same way afterwards
        "OUTPUT_DIR", os.path.join(out, "pretrain"),
        "SEED", str(seed),
    ]
    # fmt: on


def run_pretrain(opts: list) -> str:
    """MoCo pretraining in this process (resumes from last.pth); returns the checkpoint path."""
    from pretrain.config import load_cfg
    from pretrain.train_net import main

    main(["--config-file", PRETRAIN_CFG, *opts])
    return os.path.join(load_cfg(PRETRAIN_CFG, opts).OUTPUT_DIR, "last.pth")


def knn_random_vs_trained(opts: list, checkpoint: str) -> dict:
    """Weighted kNN top-1 (%) of the query encoder at its random init (the same seed and code
    path as pretraining starts from) and after pretraining."""
    from evaluation.knn import knn_accuracy
    from pretrain.builder import build_moco
    from pretrain.checkpoint import load_checkpoint
    from pretrain.config import load_cfg

    cfg = load_cfg(PRETRAIN_CFG, opts)
    result = {}
    for name in ("random_init", "moco"):
        torch.manual_seed(cfg.SEED)
        model = build_moco(cfg)
        if name == "moco":
            model.load_state_dict(load_checkpoint(checkpoint)["model"])
        acc = knn_accuracy(
            model.encoder_q,
            cfg.DATA.KNN_TRAIN,
            cfg.DATA.KNN_VAL,
            size=cfg.TEST.KNN_SIZE or cfg.INPUT.SIZE,
            batch_size=cfg.SOLVER.BATCH_SIZE,
            workers=0,
            k=cfg.TEST.KNN_K,
            T=cfg.TEST.KNN_T,
            device=torch.device("cpu"),
        )
        result[name] = 100.0 * acc
        logger.info("kNN top-1 (k=%d), %s: %.2f%%", cfg.TEST.KNN_K, name, result[name])
    result["chance"] = 100.0 / len(os.listdir(cfg.DATA.KNN_VAL))
    return result


def convert_to_d2(checkpoint: str, pkl: str) -> str:
    """Query encoder of ``checkpoint`` -> Detectron2 R50-C4 ``.pkl``; returns the report."""
    from convert import convert_checkpoint, load_checkpoint_file, save_detectron2_pkl

    result = convert_checkpoint(load_checkpoint_file(checkpoint), where=checkpoint)
    save_detectron2_pkl(result.model, pkl)
    return result.report()


def _relay_lines(stream, prefix: str) -> None:
    """Copy ``stream`` to this process's stdout line by line, each line prefixed."""
    import sys

    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def run_detection(out: str, weights: dict, voc: str, preset: Preset, seeds) -> dict:
    """Multi-seed fine-tunes through the trial runner, one runner process per entry of
    ``weights`` (name -> MODEL.WEIGHTS, "" for random init), all at once: each trial uses one
    CPU thread (configs/detection/tiny_synthetic.yaml), so the two inits share a 2-core machine
    without slowing each other much. Returns the loaded summaries by name. Finished trials are
    kept, so a rerun continues where an interrupted one stopped."""
    import subprocess
    import sys
    import threading

    from detection.summary import load_summary

    procs, relays = {}, []
    try:
        for name, w in weights.items():
            folder = os.path.join(out, "detection", name)
            os.makedirs(folder, exist_ok=True)
            # fmt: off
            argv = [
                sys.executable, "-m", "detection.trials",
                "--config-file", DETECT_CFG,
                "--output-dir", folder,
                "--seeds", *map(str, seeds),
                "--reference", "none",
                "--log-period", "60",
                "MODEL.WEIGHTS", w,
                "TRANSFER.VOC_LIKE_ROOT", voc,
                *preset.detection_opts,
            ]
            # fmt: on
            logger.info("detection trials %r: %s", name, " ".join(argv[1:]))
            procs[name] = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            # both runners print to one screen: prefix each line with its init's name
            relay = threading.Thread(
                target=_relay_lines, args=(procs[name].stdout, f"[{name}] "), daemon=True
            )
            relay.start()
            relays.append(relay)
        status = {name: p.wait() for name, p in procs.items()}
        for relay in relays:
            relay.join(timeout=10)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait()
    failed = [name for name, code in status.items() if code != 0]
    if failed:
        raise RuntimeError(
            f"detection trials for {failed} failed (exit {[status[n] for n in failed]}); see "
            f"trials.log in {os.path.join(out, 'detection')}/<name> and the train_net.out of each "
            "trial folder. Rerun the demo to resume."
        )
    return {
        name: load_summary(os.path.join(out, "detection", name, "summary.json")) for name in weights
    }


def write_report(out: str, knn: dict, summaries: dict) -> dict:
    """Comparison table and chart, the two claims checked, ``report.md`` and ``report.json``."""
    from detection.plots import compare_markdown, plot_compare, plot_trials

    labels = list(summaries)
    table = compare_markdown([summaries[k] for k in labels], labels)
    plot_compare([summaries[k] for k in labels], labels, os.path.join(out, "comparison.png"))
    for k in labels:
        plot_trials(summaries[k], os.path.join(out, "detection", k, "trials.png"))
    ap_moco, ap_rand = summaries["moco"]["mean"]["AP50"], summaries["random_init"]["mean"]["AP50"]
    claims = {
        "knn_moco_beats_random": knn["moco"] > knn["random_init"],
        "ap50_moco_beats_random": ap_moco > ap_rand,
    }
    verdict = {True: "holds", False: "DOES NOT HOLD"}
    text = "\n".join(
        [
            "# Demo report (tiny CPU run on generated data; not comparable with the paper)",
            "",
            "## Pretrained features: weighted kNN top-1 on the synthetic val split",
            "",
            "| encoder | kNN top-1 (%) |",
            "| --- | --- |",
            f"| random init | {knn['random_init']:.2f} |",
            f"| MoCo (tiny) | {knn['moco']:.2f} |",
            f"| chance | {knn['chance']:.2f} |",
            "",
            "## Detection transfer: Faster R-CNN R50-C4 (thin), synthetic VOC07+12 -> VOC07 test",
            "",
            table,
            "## Claims",
            "",
            f"- MoCo kNN > random-init kNN: {verdict[claims['knn_moco_beats_random']]} "
            f"({knn['moco']:.2f} vs {knn['random_init']:.2f})",
            f"- MoCo-init mean AP50 > random-init mean AP50: "
            f"{verdict[claims['ap50_moco_beats_random']]} ({ap_moco:.2f} vs {ap_rand:.2f})",
            "",
            "The detectors are trained for a few hundred CPU iterations and their AP is near "
            "zero: the AP comparison checks that the pipeline runs end to end, not transfer "
            "quality (docs/tiny_recipe.md, 'Detection transfer at demo size').",
            "",
        ]
    )
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    report = {
        "knn": knn,
        "detection": {k: summaries[k]["mean"] for k in labels},
        "detection_std": {k: summaries[k]["std"] for k in labels},
        "claims": claims,
    }
    _write_json(os.path.join(out, "report.json"), report)
    return report, text


def run_demo(output_dir: str, preset="default", seeds=None, data_seed: int = 0) -> dict:
    """Run (or continue) the whole demo in ``output_dir``; returns ``report.json``'s content.

    ``preset`` is a name in :data:`PRESETS` or a :class:`Preset`; ``seeds`` overrides the
    detection trial seeds.
    """
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    seeds = tuple(seeds or preset.seeds)
    out = os.path.abspath(output_dir)
    os.makedirs(out, exist_ok=True)
    progress = Progress(preset.estimates)

    progress.start("data")
    data = make_data(out, preset, data_seed)
    progress.finish("data", f"{data['cls']}, {data['voc']}")

    progress.start("pretrain")
    opts = pretrain_opts(out, preset, data, data_seed)
    checkpoint = run_pretrain(opts)
    progress.finish("pretrain", checkpoint)

    progress.start("knn")
    knn = knn_random_vs_trained(opts, checkpoint)
    _write_json(os.path.join(out, "knn.json"), knn)
    progress.finish("knn", f"random {knn['random_init']:.1f}% -> MoCo {knn['moco']:.1f}%")

    progress.start("convert")
    pkl = os.path.join(out, "pretrain", "moco_r50_c4.pkl")
    logger.info("%s", convert_to_d2(checkpoint, pkl))
    progress.finish("convert", pkl)

    progress.start("detect")
    summaries = run_detection(out, {"moco": pkl, "random_init": ""}, data["voc"], preset, seeds)
    progress.finish("detect")

    progress.start("report")
    report, text = write_report(out, knn, summaries)
    progress.finish("report", os.path.join(out, "report.md"))
    logger.info("\n%s", text)
    return report
