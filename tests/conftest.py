"""Shared pytest fixtures. Tests run on CPU, seeded, on small generated data.

Session-scoped data fixtures (generated once per test session into a temporary directory, in
about a second each; treat them as read-only, copy them before modifying anything):

- ``synthetic_cls_root``: an ImageFolder classification set written by
  ``synthetic.make_classification(seed=0, num_classes=8, train_per_class=20, val_per_class=8,
  image_size=64)``: ``<root>/train/<class>/*.jpg`` (160 images) and ``<root>/val/<class>/*.jpg``
  (64 images), classes ``synthetic.CLS_CLASSES``.
- ``synthetic_voc_root``: a PASCAL-VOC-format set written by ``synthetic.make_voc(seed=0,
  trainval_images=16, test_images=12, min_side=128, max_side=160)``: ``<root>/VOC2007``
  (trainval 16 images, test 12) and ``<root>/VOC2012`` (trainval 16), classes
  ``synthetic.DET_CLASSES``. Register it with detectron2's ``register_pascal_voc(name,
  <root>/VOC2007, split, 2007, synthetic.DET_CLASSES)``.

Both fixtures return the root as a ``pathlib.Path``; the generator's summary dict is in
``<root>/summary.json``.
"""

import pytest

import synthetic

SYNTHETIC_CLS_KWARGS = dict(
    seed=0, num_classes=8, train_per_class=20, val_per_class=8, image_size=64
)
SYNTHETIC_VOC_KWARGS = dict(seed=0, trainval_images=16, test_images=12, min_side=128, max_side=160)


@pytest.fixture(scope="session")
def synthetic_cls_root(tmp_path_factory):
    """Root of a small synthetic ImageFolder set (see the module docstring)."""
    root = tmp_path_factory.mktemp("synthetic_cls")
    synthetic.make_classification(str(root), **SYNTHETIC_CLS_KWARGS)
    return root


@pytest.fixture(scope="session")
def synthetic_voc_root(tmp_path_factory):
    """Root of a small synthetic VOC2007 + VOC2012 set (see the module docstring)."""
    root = tmp_path_factory.mktemp("synthetic_voc")
    synthetic.make_voc(str(root), **SYNTHETIC_VOC_KWARGS)
    return root
