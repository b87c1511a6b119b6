"""Speed targets for one GPU (H100-class, 16 loader CPUs), shared by the benchmarks and the
one-call check (benchmarks/gpu_check.py). Standard library only."""

E2E_TARGET = 3500.0  # pairs/s end to end at per-GPU batch 256 with split BN ...
E2E_MAX_DATA_WAIT = 5.0  # ... with data wait below this many percent
STEP32_TARGET = 1500.0  # pairs/s at per-GPU batch 32 (what each GPU of the 8-GPU recipe runs)
LOADER_TARGET = 500.0  # images/s of the per-image PIL path with 16 workers
DETECTION_TARGET = 0.45  # s/iter of Faster R-CNN R50-C4 at batch 16 on one GPU
