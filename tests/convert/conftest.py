"""Fixtures for the converter tests: seeded ResNet-50s and the checkpoint layouts that wrap them."""

import pytest
from checkpoint_files import as_pretrain_checkpoint, as_reference_moco, make_resnet50


@pytest.fixture(scope="session")
def thin_resnet():
    """Thin (width_per_group=16) ResNet-50 with randomised BN, eval mode."""
    return make_resnet50(width_per_group=16, seed=0)


@pytest.fixture(scope="session")
def thin_sd(thin_resnet):
    """Its state dict (with fc and num_batches_tracked, as torchvision saves it)."""
    return {k: v.clone() for k, v in thin_resnet.state_dict().items()}


@pytest.fixture(scope="session")
def layouts():
    """Name -> (function wrapping a torchvision state dict, extra CLI arguments to read it).

    Every layout the converter must accept; all must convert to the same tensors.
    """

    def prefixed(p, container=None):
        def wrap(sd):
            inner = {p + k: v for k, v in sd.items()}
            return {container: inner} if container else inner

        return wrap

    return {
        "pretrain": (as_pretrain_checkpoint, []),
        "pretrain-v1-head": (lambda sd: as_pretrain_checkpoint(sd, v2_head=False), []),
        "reference-moco": (as_reference_moco, []),
        "torchvision": (prefixed(""), []),
        "torchvision-module": (prefixed("module."), []),
        "torchvision-state_dict": (prefixed("", "state_dict"), []),
        "torchvision-model-module": (prefixed("module.", "model"), []),
        "prefix-module.encoder": (prefixed("module.encoder."), ["--prefix", "module.encoder."]),
        # without the trailing dot: the converter adds it
        "prefix-backbone": (prefixed("backbone.", "state_dict"), ["--prefix", "backbone"]),
        "forced-format": (as_reference_moco, ["--format", "moco"]),
    }


@pytest.fixture(scope="session")
def resnet50_factory():
    """``make_resnet50(width_per_group, seed)`` for tests that need their own network."""
    return make_resnet50
