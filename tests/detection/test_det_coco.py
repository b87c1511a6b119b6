"""The COCO transfer on a generated COCO-format set: the data, its registration, the evaluator,
and the COCO configs' model (Mask R-CNN R50-C4 with the extra norm, thin, tiny images) through
``detection.trials`` (two processes per trial, so ``detection.train_net`` under DDP) and a
one-process ``detection.train_net --eval-only``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from det_helpers import CONFIG_DIR, REPO, flatten, load_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.structures import Boxes, BoxMode, Instances, PolygonMasks
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

import synthetic
from detection import train_net
from detection.datasets import register_from_config
from synthetic.__main__ import main as synth_main
from synthetic.coco import annotation_path, mask_polygons

TINY_COCO = os.path.join(CONFIG_DIR, "tiny_coco_synthetic.yaml")
COCO_1X = os.path.join(CONFIG_DIR, "coco_R_50_C4_1x_moco.yaml")
COCO_2X = os.path.join(CONFIG_DIR, "coco_R_50_C4_2x_moco.yaml")
SIZE = dict(train_images=4, val_images=3, min_side=128, max_side=160)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_coco")
    synthetic.make_coco(str(root), seed=0, **SIZE)
    return root


def rasterise(polygons, h, w):
    return mask_util.merge(mask_util.frPyObjects(polygons, h, w))


def test_polygons_rasterise_to_exactly_the_mask():
    mask = np.zeros((20, 24), bool)
    mask[2:9, 3:7] = True  # an L-shape ...
    mask[6:9, 3:12] = True
    mask[14, 2:20] = True  # ... a one-pixel line ...
    mask[12:18, 21] = True  # ... and a one-pixel column: three parts
    polygons = mask_polygons(mask)
    assert len(polygons) == 3
    assert np.array_equal(mask_util.decode(rasterise(polygons, 20, 24)).astype(bool), mask)
    ring = np.zeros((12, 12), bool)
    ring[2:10, 2:10], ring[4:8, 4:8] = True, False
    filled = mask_util.decode(rasterise(mask_polygons(ring), 12, 12)).astype(bool)
    assert filled.sum() == 64  # COCO polygons hold no holes: the ring's hole is filled


def test_generated_set_loads_and_boxes_areas_match_the_polygons(coco_root, tmp_path):
    for split, n in (("train", 4), ("val", 3)):
        coco = COCO(annotation_path(str(coco_root), split))
        assert len(coco.getImgIds()) == n and len(coco.getAnnIds()) >= n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(synthetic.DET_CLASSES)
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.loadImgs(ann["image_id"])[0]
            assert os.path.exists(coco_root / split / img["file_name"])
            rle = rasterise(ann["segmentation"], img["height"], img["width"])
            assert ann["area"] == mask_util.area(rle) > 0
            assert ann["bbox"] == mask_util.toBbox(rle).tolist()  # the box of the mask
            assert ann["iscrowd"] == 0
    # the command line writes the same set for the same seed
    synth_main(["coco", str(tmp_path), "--seed", "0", "--train-images", "4", "--val-images", "3",
                "--min-side", "128", "--max-side", "160"])  # fmt: skip
    for split in ("train", "val"):
        assert (tmp_path / "annotations" / f"instances_{split}.json").read_bytes() == (
            coco_root / "annotations" / f"instances_{split}.json"
        ).read_bytes()


def test_config_registers_the_set_and_names_a_missing_one(coco_root, tmp_path):
    cfg = load_cfg(TINY_COCO, "TRANSFER.COCO_LIKE_ROOT", str(coco_root))
    assert register_from_config(cfg) == ["synth_coco_train", "synth_coco_val"]
    dicts = DatasetCatalog.get("synth_coco_train")
    assert len(dicts) == 4 and all(a["segmentation"] for d in dicts for a in d["annotations"])
    meta = MetadataCatalog.get("synth_coco_val")
    assert meta.evaluator_type == "coco" and meta.json_file.startswith(str(coco_root))
    assert register_from_config(cfg) == ["synth_coco_train", "synth_coco_val"]  # idempotent
    cfg = load_cfg(TINY_COCO, "TRANSFER.COCO_LIKE_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        register_from_config(cfg)
    assert "TRANSFER.COCO_LIKE_ROOT" in str(e.value)
    assert f"python -m synthetic coco {tmp_path / 'nowhere'}" in str(e.value)
    assert "instances_train.json" in str(e.value)


def test_evaluator_scores_the_ground_truth_as_perfect(coco_root, tmp_path):
    """Boxes, polygons, category ids and the COCOEvaluator agree: ground truth -> AP 100."""
    cfg = load_cfg(TINY_COCO, "TRANSFER.COCO_LIKE_ROOT", str(coco_root))
    register_from_config(cfg)
    evaluator = train_net.Trainer.build_evaluator(cfg, "synth_coco_val", str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get("synth_coco_val"):
        h, w, anns = d["height"], d["width"], d["annotations"]
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        masks = PolygonMasks([a["segmentation"] for a in anns])
        instances = Instances((h, w), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)))
        instances.scores = torch.ones(len(anns))
        instances.pred_classes = torch.tensor([a["category_id"] for a in anns])
        instances.pred_masks = torch.stack(
            [torch.from_numpy(mask_util.decode(rasterise(p, h, w))) for p in masks.polygons]
        ).bool()
        evaluator.process([d], [{"instances": instances}])
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0), task


def changed(a, b):
    fa, fb = flatten(load_cfg(a)), flatten(load_cfg(b))
    return {k for k in fa if fa[k] != fb[k]}


def test_the_tiny_coco_config_changes_only_sizes_schedule_and_data():
    sizes = {"MODEL.RESNETS.WIDTH_PER_GROUP", "MODEL.ANCHOR_GENERATOR.SIZES",
             "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
             "MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.DEVICE", "TRANSFER.CPU_THREADS",
             "DATALOADER.NUM_WORKERS", "TEST.PRECISE_BN.NUM_ITER", "OUTPUT_DIR"}  # fmt: skip
    sizes |= {f"MODEL.RPN.{k}" for k in ("BATCH_SIZE_PER_IMAGE", "PRE_NMS_TOPK_TRAIN",
              "POST_NMS_TOPK_TRAIN", "PRE_NMS_TOPK_TEST", "POST_NMS_TOPK_TEST")}  # fmt: skip
    sizes |= {f"INPUT.{k}" for k in ("MIN_SIZE_TRAIN", "MAX_SIZE_TRAIN", "MIN_SIZE_TEST",
              "MAX_SIZE_TEST")}  # fmt: skip
    sizes |= {f"SOLVER.{k}" for k in ("IMS_PER_BATCH", "BASE_LR", "STEPS", "MAX_ITER",
              "WARMUP_ITERS", "CHECKPOINT_PERIOD")}  # fmt: skip
    sizes |= {"DATASETS.TRAIN", "DATASETS.TEST", "TRANSFER.COCO_LIKE_ROOT"}
    assert changed(COCO_1X, TINY_COCO) <= sizes
    tiny = load_cfg(TINY_COCO)
    assert tiny.MODEL.MASK_ON and tiny.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert tiny.MODEL.RESNETS.NORM == "naiveSyncBN" and tiny.TEST.PRECISE_BN.ENABLED
    assert changed(COCO_1X, COCO_2X) == {"SOLVER.STEPS", "SOLVER.MAX_ITER"}


RUN_OPTS = [
    "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.PRECISE_BN.NUM_ITER", "1", "TRANSFER.INIT", "random",
]  # fmt: skip


@pytest.mark.slow
def test_coco_config_through_trials_on_two_processes_and_train_net(coco_root, tmp_path, one_thread):
    out = tmp_path / "trials"
    args = [sys.executable, "-m", "detection.trials", "--config-file", TINY_COCO,
            "--output-dir", str(out), "--num-trials", "1", "--gpus-per-trial", "2",
            "--reference", "none", "TRANSFER.COCO_LIKE_ROOT", str(coco_root),
            *RUN_OPTS]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    run = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trial = out / "trial_0_seed_0"
    assert (trial / "log.txt.rank1").exists()  # the trial ran on two processes
    final = json.loads((trial / "final_metrics.json").read_text())["results"]
    assert set(final) == {"bbox", "segm"}
    summary = json.loads((out / "summary.json").read_text())
    for m in ("AP50", "AP", "AP75"):
        assert summary["trials"][0][m] == final["bbox"][m]
        assert summary["trials"][0][f"mask_{m}"] == final["segm"][m]
        assert summary["mean"][f"mask_{m}"] == final["segm"][m]
    assert "| mask AP50 | mask AP | mask AP75 |" in (out / "summary.md").read_text()

    # the same weights evaluated by one process give the two-process results
    eval_args = default_argument_parser().parse_args(
        ["--config-file", TINY_COCO, "--eval-only", "TRANSFER.COCO_LIKE_ROOT", str(coco_root),
         "MODEL.WEIGHTS", str(trial / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")]
    )  # fmt: skip
    one = train_net.run(eval_args)
    for task in ("bbox", "segm"):
        for m in ("AP50", "AP", "AP75"):
            assert one[task][m] == final[task][m], (task, m)
    # ... down to every detection: boxes, scores, classes and mask RLEs of all val images, in
    # the same order (the two ranks' detections are gathered completely)
    two_dets, one_dets = (
        json.loads((folder / "inference" / "coco_instances_results.json").read_text())
        for folder in (trial, tmp_path / "eval")
    )
    assert {d["image_id"] for d in two_dets} == {1, 2, 3}
    assert all("segmentation" in d for d in two_dets)
    assert one_dets == two_dets
