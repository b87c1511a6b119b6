"""The demo pipeline: each stage writes its outputs under one folder and is skipped (or resumed)
when they are already there, so an interrupted demo continues where it stopped."""

import json
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time

import torch

from common.io import atomic_write, atomic_write_json

from .console import Console, hms
from .eta import DemoEta, detection_done, pretrain_done
from .presets import PRESETS, ROOT, Preset
from .stage_output import StageOutput
from .stages import Meter, StageRunner

# Each stage imports the packages it drives when it runs, so that ``import demo`` and
# ``moco-demo --help`` stay light (detectron2's training stack, matplotlib, OpenCV).
logger = logging.getLogger("demo")
STAGES = ("data", "pretrain", "knn", "convert", "detect", "report")


def _write_json(path: str, obj) -> None:
    atomic_write_json(path, obj, indent=2, sort_keys=True)


def make_data(out: str, preset: Preset, seed: int) -> dict:
    """Generate (once) the classification and VOC-format sets under ``out/data``; returns their
    roots and summaries."""
    import synthetic
    from common.runconfig import diff_lines, refuse_changes

    data = os.path.join(out, "data")
    marker = os.path.join(data, "done.json")
    settings = {"preset": preset.name, "data_seed": seed}
    if os.path.exists(marker):
        with open(marker) as f:
            info = json.load(f)
        # a folder made before the settings were recorded is taken as it is
        old = info.get("settings", settings)
        refuse_changes(
            marker,
            diff_lines(old, settings),
            f"Rerun with --preset {old['preset']} --data-seed {old['data_seed']} to continue "
            "that demo, or give a new --output-dir.",
        )
        return info
    cls = synthetic.make_classification(
        os.path.join(data, "cls"),
        seed=seed,
        num_classes=preset.num_classes,
        train_per_class=preset.train_per_class,
        val_per_class=preset.val_per_class,
        image_size=preset.cls_image_size,
        workers=preset.data_workers,
    )
    voc = synthetic.make_voc(
        os.path.join(data, "voc"),
        seed=seed,
        trainval_images=preset.voc_trainval,
        test_images=preset.voc_test,
        **preset.voc_kwargs,
    )
    info = {
        "settings": settings,
        "cls": os.path.join(data, "cls"),
        "voc": os.path.join(data, "voc"),
        "cls_summary": cls,
        "voc_summary": voc,
    }
    _write_json(marker, info)
    return info


def pretrain_opts(out: str, preset: Preset, data: dict, seed: int) -> list:
    """Overrides of the preset's pretraining config for this demo folder."""
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


def run_pretrain(config: str, opts: list) -> str:
    """MoCo pretraining of ``config`` with ``opts`` in this process (resumes from last.pth);
    returns the checkpoint path."""
    from pretrain.config import load_cfg
    from pretrain.train_net import main

    # the command itself, not its console wrapper (common.errors.entry_point), which would turn
    # the error into an exit status: the demo's stage names it, and the demo's own wrapper ends
    # with its line
    main.__wrapped__(["--config-file", config, *opts])
    return os.path.join(load_cfg(config, opts).OUTPUT_DIR, "last.pth")


def knn_random_vs_trained(config: str, opts: list, checkpoint: str, device: str = "cpu") -> dict:
    """Weighted kNN top-1 (%) of the query encoder at its random init (the same seed and code
    path as pretraining starts from) and after pretraining."""
    from evaluation.knn import load_encoder
    from pretrain.builder import build_moco
    from pretrain.config import load_cfg
    from pretrain.knn import knn_accuracy

    cfg = load_cfg(config, opts)
    result = {}
    for name in ("random_init", "moco"):
        if name == "moco":
            encoder = load_encoder(checkpoint)  # strict; logs "loaded N/N backbone tensors"
        else:
            torch.manual_seed(cfg.SEED)
            encoder = build_moco(cfg).encoder_q
        acc = knn_accuracy(
            encoder.to(device),
            cfg.DATA.KNN_TRAIN,
            cfg.DATA.KNN_VAL,
            size=cfg.TEST.KNN_SIZE or cfg.INPUT.SIZE,
            batch_size=cfg.SOLVER.BATCH_SIZE,
            workers=0,
            k=cfg.TEST.KNN_K,
            T=cfg.TEST.KNN_T,
            device=torch.device(device),
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
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _last_error(log_path: str) -> str:
    """The last ERROR entry of a trial runner's log (with its continuation lines), or a pointer
    to the log when there is none."""
    try:
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return f"(no {log_path})"
    # detectron2's file format: "[date time] logger LEVEL: message"
    starts = [i for i, line in enumerate(lines) if re.match(r"\[[^]]*\] \S+ ERROR: ", line)]
    if not starts:
        return f"see {log_path}"
    entry = [lines[starts[-1]]]
    for line in lines[starts[-1] + 1 :]:
        if line.startswith("["):  # the next log entry
            break
        entry.append(line)
    return "\n".join(entry)


def run_detection(out: str, weights: dict, voc: str, preset: Preset, seeds) -> dict:
    """Multi-seed fine-tunes through the trial runner, one runner process per entry of
    ``weights`` (name -> MODEL.WEIGHTS, "" for random init), all at once: on CPU each trial uses
    one thread (configs/detection/tiny_demo.yaml), so the two inits share a 2-core machine
    without slowing each other much; on one GPU the two inits share it. Returns the loaded
    summaries by name. Finished trials are kept, so a rerun continues where an interrupted one
    stopped."""
    from detection.summary import load_summary

    config = preset.detect_config
    procs, relays = {}, []
    try:
        for name, w in weights.items():
            folder = os.path.join(out, "detection", name)
            os.makedirs(folder, exist_ok=True)
            # fmt: off
            argv = [
                sys.executable, "-m", "detection.trials",
                "--config-file", config,
                "--output-dir", folder,
                "--seeds", *map(str, seeds),
                "--reference", "none",
                "--log-period", "60",
                *preset.trial_args,
                # "": the random-init baseline, asked for explicitly (detection/weights.py)
                "MODEL.WEIGHTS", w, *(() if w else ("TRANSFER.INIT", "random")),
                "TRANSFER.VOC_LIKE_ROOT", voc,
                *preset.detection_opts,
                *preset.init_opts.get(name, ()),
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
    refused = [name for name in failed if status[name] == 2]
    if refused:
        # exit status 2: the runner started nothing (trials locked by a live runner, a damaged
        # final_metrics.json, or trials started with another config); its log says which
        reasons = "\n".join(
            f"[{name}] {_last_error(os.path.join(out, 'detection', name, 'trials.log'))}"
            for name in refused
        )
        raise RuntimeError(
            f"the detection trial runner for {refused} started nothing:\n{reasons}\n"
            "A rerun with the same preset continues; a changed preset needs another "
            "--output-dir."
        )
    if failed:
        raise RuntimeError(
            f"detection trials for {failed} failed (exit {[status[n] for n in failed]}); see "
            f"trials.log in {os.path.join(out, 'detection')}/<name> and the train_net.out of each "
            "trial folder. Rerun the demo to resume."
        )
    return {
        name: load_summary(os.path.join(out, "detection", name, "summary.json")) for name in weights
    }


# One-sided 95% quantiles of Student's t by degrees of freedom (n - 1 seeds); beyond the table
# the 30-df value is used, which is conservative.
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860}
_T95.update({9: 1.833, 10: 1.812, 15: 1.753, 20: 1.725, 30: 1.697})
MIN_SEEDS_FOR_CLAIM = 3


def t95(df: int) -> float:
    """One-sided 95% Student-t quantile for ``df`` >= 1 degrees of freedom (table above; the
    nearest tabulated df at or below ``df``, so the value is never too small)."""
    if df < 1:
        raise ValueError(f"t95 needs df >= 1, got {df}")
    return _T95[max(k for k in _T95 if k <= df)]


def paired_difference(summaries: dict, metric: str = "AP50") -> dict:
    """Per-seed difference ``moco - random_init`` of ``metric`` over the seeds both runners
    finished, and the rule that decides whether MoCo init beats random init.

    Rule (a one-sided paired t-test at 5%): with at least ``MIN_SEEDS_FOR_CLAIM`` paired seeds,
    the claim holds when the mean difference is positive and larger than
    ``t95(n - 1) * std / sqrt(n)`` (std: sample std, ddof=1, of the differences). Otherwise
    the difference is within seed-to-seed noise (or there are too few seeds to tell).

    Returns ``{"metric", "seeds", "moco", "random_init", "diff", "n", "mean", "std", "sem",
    "t95", "threshold", "holds", "verdict"}`` (lists in seed order; std, sem, t95 and
    threshold are None below two seeds).
    """
    from detection.summary import mean_std

    def by_seed(name):
        return {
            r["seed"]: r[metric]
            for r in summaries[name]["trials"]
            if r.get("status") == "finished" and r.get(metric) is not None
        }

    moco, rand = by_seed("moco"), by_seed("random_init")
    seeds = sorted(set(moco) & set(rand))
    diff = [moco[s] - rand[s] for s in seeds]
    out = {"metric": metric, "seeds": seeds, "n": len(seeds), "diff": diff}
    out.update(moco=[moco[s] for s in seeds], random_init=[rand[s] for s in seeds])
    out.update(mean=None, std=None, sem=None, t95=None, threshold=None, holds=False)
    if seeds:
        out["mean"], out["std"] = mean_std(diff)
    if len(seeds) >= 2:
        out["sem"] = out["std"] / math.sqrt(len(seeds))
        out["t95"] = t95(len(seeds) - 1)
        out["threshold"] = out["t95"] * out["sem"]
    if len(seeds) < MIN_SEEDS_FOR_CLAIM:
        out["verdict"] = (
            f"NOT CHECKED: {len(seeds)} paired seed(s), the rule needs {MIN_SEEDS_FOR_CLAIM}"
        )
    elif out["mean"] > 0 and out["mean"] > out["threshold"]:
        out["holds"] = True
        out["verdict"] = (
            f"holds: mean paired difference {out['mean']:+.2f} > t95({len(seeds) - 1}) x SEM "
            f"= {out['t95']:.3f} x {out['sem']:.2f} = {out['threshold']:.2f}"
        )
    else:
        out["verdict"] = (
            f"DOES NOT HOLD (within seed-to-seed noise): mean paired difference "
            f"{out['mean']:+.2f} is not > t95({len(seeds) - 1}) x SEM = {out['t95']:.3f} x "
            f"{out['sem']:.2f} = {out['threshold']:.2f}"
        )
    return out


def _per_seed_table(summaries: dict) -> str:
    from detection.summary import METRICS

    lines = [
        "| seed | " + " | ".join(f"{m} MoCo | {m} random | {m} diff" for m in METRICS) + " |",
        "| ---: |" + " ---: | ---: | ---: |" * len(METRICS),
    ]
    pairs = {m: paired_difference(summaries, m) for m in METRICS}
    for i, seed in enumerate(pairs["AP50"]["seeds"]):
        cells = []
        for m in METRICS:
            p = pairs[m]
            cells.append(f"{p['moco'][i]:.2f} | {p['random_init'][i]:.2f} | {p['diff'][i]:+.2f}")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    stats = []
    for m in METRICS:
        p = pairs[m]
        if p["std"] is not None:
            stats.append(f"{m} diff mean {p['mean']:+.2f}, sample std {p['std']:.2f}")
        elif p["mean"] is not None:
            stats.append(f"{m} diff {p['mean']:+.2f} (one seed, no std)")
    return "\n".join(lines) + "\n\n" + "; ".join(stats) + ".\n"


def _setup_lines(preset) -> list:
    """Markdown lines saying how the detectors were fine-tuned: the config, the shared
    overrides and those of each init."""
    config = os.path.relpath(preset.detect_config, ROOT)
    lines = [
        f"Fine-tuned with `{config}`"
        + (f" and `{' '.join(preset.detection_opts)}`" if preset.detection_opts else "")
        + "."
    ]
    for name, opts in preset.init_opts.items():
        lines.append(f"{name} adds `{' '.join(opts)}`.")
    return [" ".join(lines), ""]


def _curves_lines(out: str) -> list:
    """Markdown lines showing the pretraining curves (drawn into ``out/pretrain/curves.png``),
    or saying why there are none."""
    from pretrain.plots import MetricsError, plot_curves

    try:
        png = plot_curves(os.path.join(out, "pretrain"))["path"]
    except MetricsError as e:
        return [f"No pretraining curves: {e}.", ""]
    return ["Pretraining curves:", "", f"![pretraining curves]({os.path.relpath(png, out)})", ""]


def write_report(out: str, knn: dict, summaries: dict, preset=None) -> tuple:
    """Comparison tables and chart, the two claims checked, ``report.md`` and ``report.json``.

    ``report.md`` shows its figures with paths relative to ``out``: the pretraining curves
    (``pretrain/curves.png``), the comparison (``comparison.png``) and each init's trials
    (``detection/<init>/trials.png``), all written by this function.

    ``preset`` (optional) adds a line saying how each init was fine-tuned.

    Returns ``(report, text)``: the content of ``report.json`` (a dict with ``knn``,
    ``detection`` means, ``detection_std``, ``paired`` AP50 difference from
    :func:`paired_difference` and ``claims``) and the markdown of ``report.md``, both written
    atomically. Raises ``detection.summary.EmptySummaryError`` (writing nothing) when an init
    has no finished trial.
    """
    from detection.plots import compare_markdown, plot_compare, plot_trials
    from detection.summary import EmptySummaryError

    empty = [
        k
        for k, summary in summaries.items()
        if not any(t.get("status") == "finished" for t in summary["trials"])
    ]
    if empty:  # nothing to compare: keep the report of an earlier run as it is
        raise EmptySummaryError(
            f"no finished detection trial for {empty}, so {os.path.join(out, 'report.md')} "
            "was not written; rerun the demo to resume the trials"
        )
    labels = list(summaries)
    table = compare_markdown([summaries[k] for k in labels], labels)
    plot_compare([summaries[k] for k in labels], labels, os.path.join(out, "comparison.png"))
    for k in labels:
        plot_trials(summaries[k], os.path.join(out, "detection", k, "trials.png"))
    paired = paired_difference(summaries, "AP50")
    claims = {
        "knn_moco_beats_random": knn["moco"] > knn["random_init"],
        "ap50_moco_beats_random": paired["holds"],
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
            *_curves_lines(out),
            "## Detection transfer: Faster R-CNN R50-C4 (thin), synthetic VOC07+12 -> VOC07 test",
            "",
            table,
            "![mean ± std AP of each init](comparison.png)",
            "",
            *(f"![{k}: AP of each seed](detection/{k}/trials.png)\n" for k in labels),
            *(_setup_lines(preset) if preset is not None else []),
            "Per seed (the same seed gives both inits the same data order and head init):",
            "",
            _per_seed_table(summaries),
            "## Claims",
            "",
            f"- MoCo kNN > random-init kNN: {verdict[claims['knn_moco_beats_random']]} "
            f"({knn['moco']:.2f} vs {knn['random_init']:.2f})",
            f"- MoCo init beats random init on AP50: {paired['verdict']}",
            "",
            "Rule for the AP50 claim: over the seeds both inits finished (at least "
            f"{MIN_SEEDS_FOR_CLAIM}), the mean of the paired differences (MoCo - random, per "
            "seed) must be positive and larger than t95(n-1) x its standard error (sample std / "
            "sqrt(n)), a one-sided paired t-test at 5%. Otherwise the difference is reported as "
            "within seed-to-seed noise and `--strict` fails.",
            "",
        ]
    )
    atomic_write(os.path.join(out, "report.md"), lambda f: f.write(text), text=True)
    report = {
        "knn": knn,
        "detection": {k: summaries[k]["mean"] for k in labels},
        "detection_std": {k: summaries[k]["std"] for k in labels},
        "paired": paired,
        "claims": claims,
    }
    _write_json(os.path.join(out, "report.json"), report)
    return report, text


def _pretrain_meter(preset, opts) -> Meter:
    """Progress of the pretraining stage: iterations in its metrics.json."""
    from pretrain.config import load_cfg

    cfg = load_cfg(preset.pretrain_config, opts)
    per_epoch = preset.num_classes * preset.train_per_class // cfg.SOLVER.BATCH_SIZE
    if cfg.SOLVER.MAX_ITERS_PER_EPOCH:
        per_epoch = min(per_epoch, cfg.SOLVER.MAX_ITERS_PER_EPOCH)
    total = per_epoch * cfg.SOLVER.EPOCHS
    startup = preset.pretrain_startup_iters
    return Meter(
        startup + total,
        total,
        "it",
        lambda: pretrain_done(cfg.OUTPUT_DIR, startup),
    )


def _detect_meter(out: str, preset, names, seeds) -> Meter:
    """Progress of the detection stage: the iterations of every trial of every init."""
    from detection.config import load_cfg

    max_iter = load_cfg(preset.detect_config, list(preset.detection_opts)).SOLVER.MAX_ITER
    trials = len(names) * len(seeds)
    overhead = preset.trial_overhead_iters
    folders = [os.path.join(out, "detection", name) for name in names]
    return Meter(
        trials * (max_iter + overhead),
        trials * max_iter,
        "it",
        lambda: detection_done(folders, max_iter, overhead),
    )


def _data_summary(data: dict) -> str:
    """``"3,600 classification images (8 classes) in <cls>, 400 VOC-format images in <voc>"``."""
    cls, voc = data["cls_summary"], data["voc_summary"]
    n_cls = sum(sum(per_class.values()) for per_class in cls["counts"].values())
    n_voc = sum(split["images"] for split in voc["splits"].values())
    return (
        f"{n_cls:,} classification images ({len(cls['classes'])} classes) in {data['cls']}, "
        f"{n_voc:,} VOC-format images in {data['voc']}"
    )


INIT_LABELS = {"moco": "MoCo", "random_init": "random init"}


def _detection_summary(summaries: dict) -> str:
    """``"AP50 MoCo 57.71 ± 3.62, random init 37.45 ± 0.59 (3 seeds each)"``."""
    parts = []
    for name, summary in summaries.items():
        mean, std = summary["mean"].get("AP50"), summary["std"].get("AP50")
        text = "no finished trial" if mean is None else f"{mean:.2f}"
        parts.append(f"{INIT_LABELS.get(name, name)} {text}" + (f" ± {std:.2f}" if std else ""))
    n = max(s["num_finished"] for s in summaries.values())
    return f"AP50 {', '.join(parts)} ({n} seed{'s' * (n != 1)})"


def _claims_lines(report: dict) -> list:
    knn, paired, claims = report["knn"], report["paired"], report["claims"]
    verdict = {True: "holds", False: "DOES NOT HOLD"}
    return [
        f"claim: MoCo kNN > random-init kNN {verdict[claims['knn_moco_beats_random']]} "
        f"({knn['moco']:.2f} vs {knn['random_init']:.2f})",
        f"claim: MoCo init beats random init on AP50 {paired['verdict']}",
    ]


def run_demo(
    output_dir: str,
    preset="default",
    seeds=None,
    data_seed: int = 0,
    verbose: bool = False,
    rerun_hint: str = "rerunning the same command",
) -> dict:
    """Run (or continue) the whole demo in ``output_dir``; returns ``report.json``'s content.

    ``preset`` is a name in :data:`PRESETS` or a :class:`Preset`; ``seeds`` overrides the
    detection trial seeds. The terminal shows one progress line and one result line per stage;
    everything the stages print goes to ``output_dir/logs/<stage>.log`` (``verbose``: to the
    terminal too). ``rerun_hint`` names the command that continues an interrupted demo. A
    failing stage prints the end of its log and its exception propagates.
    """
    from detectron2.utils.logger import setup_logger

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    seeds = tuple(seeds or preset.seeds)
    out = os.path.abspath(output_dir)
    os.makedirs(out, exist_ok=True)
    with StageOutput(os.path.join(out, "logs"), verbose) as output:
        # the demo's own log lines go where the stage's output goes (its log)
        setup_logger(name="demo", abbrev_name="demo")
        console = Console(output.terminal, tty=False if verbose else None)
        eta = DemoEta(preset.estimates, STAGES)
        runner = StageRunner(STAGES, output, console, eta, rerun_hint)
        started = time.time()
        console.line(
            f"demo, preset {preset.name!r}, in {out}; each stage's output: {output.log_dir}/. "
            f"About {hms(eta.left()[1])} on {preset.reference_machine}, re-estimated as it runs."
        )
        with runner.stage("data") as stage:
            data = make_data(out, preset, data_seed)
            stage.summary = _data_summary(data)

        opts = pretrain_opts(out, preset, data, data_seed)
        with runner.stage("pretrain", _pretrain_meter(preset, opts)) as stage:
            checkpoint = run_pretrain(preset.pretrain_config, opts)
            stage.summary = f"checkpoint {checkpoint}"

        with runner.stage("knn") as stage:
            knn = knn_random_vs_trained(preset.pretrain_config, opts, checkpoint, preset.device)
            _write_json(os.path.join(out, "knn.json"), knn)
            stage.summary = (
                f"kNN top-1 random init {knn['random_init']:.2f}%, MoCo {knn['moco']:.2f}% "
                f"(chance {knn['chance']:.2f}%)"
            )

        with runner.stage("convert") as stage:
            pkl = os.path.join(out, "pretrain", "moco_r50_c4.pkl")
            logger.info("%s", convert_to_d2(checkpoint, pkl))
            stage.summary = pkl

        weights = {"moco": pkl, "random_init": ""}
        with runner.stage("detect", _detect_meter(out, preset, weights, seeds)) as stage:
            summaries = run_detection(out, weights, data["voc"], preset, seeds)
            stage.summary = (
                ", ".join(
                    f"AP50 {name} {s['mean'].get('AP50', float('nan')):.2f}"
                    + (f" ± {s['std']['AP50']:.2f}" if s["std"].get("AP50") is not None else "")
                    for name, s in summaries.items()
                )
                + f" ({len(seeds)} seed{'s' * (len(seeds) > 1)})"
            )

        with runner.stage("report") as stage:
            report, text = write_report(out, knn, summaries, preset)
            logger.info("\n%s", text)
            stage.summary = os.path.join(out, "report.md")
        for line in _claims_lines(report):
            console.line(line)
        console.line(f"demo done in {hms(time.time() - started)}; report: {stage.summary}")
    return report
