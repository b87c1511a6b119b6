"""The progress line's speed is wall clock over the logging window, data stalls included."""

import logging
import re
import time

import pytest
import torch
from detectron2.utils.events import EventStorage
from moco_helpers import ToyEncoder

from pretrain.builder import MoCo
from pretrain.config import get_pretrain_cfg
from pretrain.engine import train_one_epoch
from pretrain.meter import ProgressPrinter, TrainMeter, starved_advice
from pretrain.views import PilViews, ViewGenerators

BATCH, ITERS, STALL = 4, 8, 0.25


class StallingLoader:
    """Yields (views, skipped) like the PIL-path loader; sleeps before the batches in ``slow``."""

    def __init__(self, slow):
        self.slow = set(slow)

    def __len__(self):
        return ITERS

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(ITERS):
            if i in self.slow:
                time.sleep(STALL)
            views = [torch.randn(BATCH, 3, 8, 8, generator=g) for _ in range(2)]
            yield views, torch.zeros(BATCH, 2, dtype=torch.long)  # (first, count) per sample


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _run(slow):
    """Train one epoch of 8 iterations (LOG_PERIOD 4); return (log records, wall images/s, hist)."""
    cfg = get_pretrain_cfg()
    cfg.LOG_PERIOD = 4
    cfg.DATA.NUM_WORKERS = 3
    torch.manual_seed(0)
    model = MoCo(ToyEncoder, dim=16, K=32, m=0.9, T=0.2)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    meter = TrainMeter(cfg, writers=[ProgressPrinter(ITERS * 3)])
    log = logging.getLogger("pretrain.meter")
    capture = _Capture()
    log.addHandler(capture)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        with EventStorage(0) as storage:
            start = time.perf_counter()
            iteration = train_one_epoch(
                model,
                StallingLoader(slow),
                opt,
                None,
                0,
                0,
                cfg,
                view_maker=PilViews("cpu"),
                generators=ViewGenerators(None, None),
                meter=meter,
            )
            wall = time.perf_counter() - start
            meter.write()  # the caller writes the epoch's last iteration
            hist = storage.histories()
    finally:
        log.removeHandler(capture)
        log.setLevel(level)
    assert iteration == ITERS
    return capture.records, BATCH * ITERS / wall, hist


def test_printed_speed_is_wall_clock_and_stalls_warn():
    records, wall_rate, hist = _run(slow={1, 3, 5, 7})  # every other batch stalls
    lines = [r.getMessage() for r in records if "img/s" in r.getMessage()]
    assert len(lines) == 2, lines  # one per window of 4 iterations
    for line in lines:
        printed = float(re.search(r"([\d.]+) img/s", line).group(1))
        assert abs(printed - wall_rate) < 0.2 * wall_rate, (printed, wall_rate, line)
        pct = float(re.search(r"\((\d+)% waiting\)", line).group(1))
        assert pct > 50, line  # 2 stalls of 0.25 s in a window of a few ms of compute
    # the windows' seconds add up to the wall clock of the epoch
    printed_s = sum(4 * float(re.search(r"time ([\d.]+)", line).group(1)) for line in lines)
    assert abs(printed_s - BATCH * ITERS / wall_rate) < 0.05 * printed_s + 0.01
    # ETA at the window rate: 16 iterations left after the first window
    eta = re.search(r"eta (\d+):(\d\d):(\d\d)", lines[0]).groups()
    eta_s = int(eta[0]) * 3600 + int(eta[1]) * 60 + int(eta[2])
    assert abs(eta_s - 16 * BATCH / wall_rate) <= 1.5, (eta_s, lines[0])
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, not on every window
    assert "DATA.NUM_WORKERS (now 3)" in warnings[0] and "INPUT.PIPELINE device" in warnings[0]
    # metrics.json / TensorBoard get the same window values, one per window
    assert len(hist["images_per_s"].values()) == 2
    assert hist["data_wait_pct"].latest() > 50
    assert len(hist["loss"].values()) == ITERS  # per-iteration scalars are kept


def test_first_batch_wait_alone_does_not_warn():
    # integration: loader start-up only, counted in the first window's honest numbers
    records, _, hist = _run(slow={0})
    first = float(re.search(r"\((\d+)% waiting\)", records[0].getMessage()).group(1))
    assert first > 30
    # the warning's rule, deterministically: an epoch's first batch is left out of the share
    cfg = get_pretrain_cfg()
    meter = TrainMeter(cfg)
    log = logging.getLogger("pretrain.meter")
    capture = _Capture()
    log.addHandler(capture)
    try:
        with EventStorage(0) as storage:
            meter.speed.add(2.0, BATCH, 1.9, epoch_start=True)  # 1.9 s of worker start-up
            for _ in range(3):
                meter.speed.add(0.1, BATCH, 0.005, epoch_start=False)
            meter.close_window(storage)
            assert storage.histories()["data_wait_pct"].latest() > 80  # honest share
            assert not capture.records
            for _ in range(4):  # a steady 20% wait warns
                meter.speed.add(0.1, BATCH, 0.02, epoch_start=False)
            meter.close_window(storage)
            assert len(capture.records) == 1 and "20%" in capture.records[0].getMessage()
    finally:
        log.removeHandler(capture)


def test_cpu_views_made_in_process_do_not_warn():
    # on the CPU the batched pipeline's views are made on the step's own cores: nothing to fill
    cfg = get_pretrain_cfg()
    cfg.MODEL.DEVICE, cfg.INPUT.PIPELINE = "cpu", "batched"
    log = logging.getLogger("pretrain.meter")
    capture = _Capture()
    log.addHandler(capture)
    try:
        for device, pipeline, warns in [("cpu", "batched", 0), ("cpu", "pil", 1)]:
            cfg.MODEL.DEVICE, cfg.INPUT.PIPELINE = device, pipeline
            meter = TrainMeter(cfg)
            with EventStorage(0) as storage:
                for _ in range(4):  # a steady 20% wait
                    meter.speed.add(0.1, BATCH, 0.02, epoch_start=False)
                meter.close_window(storage)
            assert len(capture.records) == warns, (pipeline, capture.records)
            capture.records.clear()
    finally:
        log.removeHandler(capture)


@pytest.mark.parametrize(
    "pipeline, prefetch, advice",
    [
        ("pil", 0, "INPUT.PIPELINE device"),
        ("device", 0, "INPUT.PREFETCH 2"),
        ("batched", 0, "INPUT.PREFETCH 2"),
        ("device", 2, "raise INPUT.PREFETCH (now 2)"),
    ],
)
def test_starved_warning_names_the_fix_for_the_pipeline(pipeline, prefetch, advice):
    cfg = get_pretrain_cfg()
    cfg.INPUT.PIPELINE = pipeline
    text = starved_advice(cfg, prefetch)
    assert advice in text, text
    if pipeline != "pil":  # already decoding on the device: do not tell them to switch to it
        assert "INPUT.PIPELINE device" not in text
