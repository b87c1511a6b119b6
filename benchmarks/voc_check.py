"""Benchmark of the VOC split checker against detectron2's plain loader.

Generates ``--images`` VOC annotation files (1-4 objects each, like VOC) and as many JPEGs of
VOC's sizes (500x375, 375x500, 500x333; a photo-like texture at quality 90, about the file size
of a VOC photo), then times, on a warm page cache (best of ``--repeat``):

- ``detectron2/load_voc_instances``: detectron2's loader (no checks, no image access);
- ``decode/read_rgb``: the reading rule alone (``common.images.read_rgb``), one thread;
- ``scan/serial-xml``: this project's checker, XML only, one thread;
- ``scan/serial``: XML + every image decoded whole and its size compared, one thread;
- ``scan/threads-N``: the same on N threads (what ``detection.voc_check`` uses);
- ``scan/processes-N``: the same on N processes (the alternative that was rejected).

Example::

    python benchmarks/voc_check.py --images 5000 --out benchmarks/results/voc_check_cpu.json
"""

import argparse
import concurrent.futures
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from detectron2.data.datasets.pascal_voc import load_voc_instances  # noqa: E402

from common.images import read_rgb  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from detection import voc_check  # noqa: E402

CLASSES = ("disk", "square", "triangle", "star", "cross", "ring")


def photo_like(h, w, rng):
    """An HxWx3 uint8 texture with detail at several scales plus sensor-like noise: its JPEG
    decodes about as slowly as a photo of the same size (pure noise would be slower)."""
    out = np.zeros((h, w, 3))
    for scale in (4, 16, 64):
        coarse = rng.random((h // scale + 2, w // scale + 2, 3))
        out += np.kron(coarse, np.ones((scale, scale, 1)))[:h, :w] * 255 / 3
    return np.clip(out + rng.normal(0, 6, out.shape), 0, 255).astype(np.uint8)


def make_split(root, n, seed=0):
    """``n`` VOC annotations + JPEGs under ``root`` (split "trainval"); returns the folder."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    sizes = [(500, 375), (375, 500), (500, 333)]
    templates = {}
    for w, h in sizes:  # one JPEG per size, hard-linked (the page cache holds three files)
        path = os.path.join(root, f"template_{w}x{h}.jpg")
        Image.fromarray(photo_like(h, w, rng)).save(path, quality=90)
        templates[(w, h)] = path
    ids = []
    for i in range(n):
        fileid = f"{i:06d}"
        w, h = sizes[i % len(sizes)]
        objs = []
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
            x1, y1 = int(rng.integers(x0, w + 1)), int(rng.integers(y0, h + 1))
            name = CLASSES[int(rng.integers(len(CLASSES)))]
            objs.append(
                f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
        xml = (
            f"<annotation><folder>VOC2007</folder><filename>{fileid}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{''.join(objs)}</annotation>"
        )
        with open(os.path.join(root, "Annotations", fileid + ".xml"), "w") as f:
            f.write(xml)
        os.link(templates[(w, h)], os.path.join(root, "JPEGImages", fileid + ".jpg"))
        ids.append(fileid)
    with open(os.path.join(root, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return root


def scan_processes(dirname, classes, workers):
    ids, _ = voc_check._read_ids(dirname, "trainval")
    index = {c: i for i, c in enumerate(classes)}
    batches = [ids[i : i + voc_check._BATCH] for i in range(0, len(ids), voc_check._BATCH)]
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(voc_check._check_ids, dirname, b, index, False, set(b)) for b in batches
        ]
        return [r for f in futures for r in f.result()]


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--processes", type=int, nargs="*", default=[2], help="[] to skip these rows")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="voc_check_bench_")
    try:
        d = make_split(tmp, args.images)
        jpeg_kb = {
            f: round(os.path.getsize(os.path.join(d, f)) / 1024, 1)
            for f in sorted(os.listdir(d))
            if f.startswith("template_")
        }
        rows = {}
        rows["detectron2/load_voc_instances"], ref = best_of(
            lambda: load_voc_instances(d, "trainval", CLASSES), args.repeat
        )
        jpgs = [os.path.join(d, "JPEGImages", f"{i:06d}.jpg") for i in range(args.images)]
        rows["decode/read_rgb"], _ = best_of(lambda: [read_rgb(j) for j in jpgs], args.repeat)
        rows["scan/serial-xml"], _ = best_of(
            lambda: voc_check.scan_voc_split(d, "trainval", CLASSES, check_images=False, workers=1),
            args.repeat,
        )
        rows["scan/serial"], scan = best_of(
            lambda: voc_check.scan_voc_split(d, "trainval", CLASSES, workers=1), args.repeat
        )
        assert not scan.problems and scan.dicts == ref, "checker and detectron2 disagree"
        for n in args.threads:
            rows[f"scan/threads-{n}"], _ = best_of(
                lambda n=n: voc_check.scan_voc_split(d, "trainval", CLASSES, workers=n),
                args.repeat,
            )
        for n in args.processes:
            rows[f"scan/processes-{n}"], _ = best_of(
                lambda n=n: scan_processes(d, CLASSES, n), args.repeat
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "images": args.images,
        "jpeg_kb": jpeg_kb,
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "seconds": rows,
        "note": "warm page cache, local disk; best of --repeat; every image decoded whole",
    }
    print(f"{'variant':34s} {'seconds':>8s} {'us/image':>9s} {'s for 22k':>10s}")
    for name, sec in rows.items():
        per = sec / args.images
        print(f"{name:34s} {sec:8.3f} {1e6 * per:9.1f} {22_000 * per:10.1f}")
    if args.out:
        atomic_write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
