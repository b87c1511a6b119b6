"""MoCo v2 pretraining and Detectron2 detection transfer, as one installable project."""

from setuptools import find_packages, setup

setup(
    name="moco-detectron2",
    version="0.1.0",
    description="MoCo v2 pretraining, conversion to Detectron2 R50-C4 and multi-seed VOC transfer",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "common*",
            "pretrain*",
            "convert*",
            "detection*",
            "evaluation*",
            "synthetic*",
            "demo*",
        ]
    ),
    include_package_data=True,
    # Minimums only: the exact versions for the reference platform live in
    # requirements/platform.txt, so users on another CUDA can install their own torch first.
    # detectron2 is not on PyPI under its own name: tools/install_detectron2.sh provides it.
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        # the "device" pipeline's batched JPEG decoder (torchvision's is the fallback); its
        # image decoders need no FFmpeg. No macOS wheel of 0.17: torchvision decodes there.
        "torchcodec>=0.16; platform_system != 'Darwin'",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.2",
        "opencv-python-headless>=4.8",
        "numpy",
        "Pillow",
        "matplotlib",
        "tqdm",  # the trial runner's status lines (also a dependency of detectron2 and iopath)
        "tensorboard",
        "setuptools<81",
        "submitit>=1.5",  # SLURM jobs: moco-pretrain --slurm, moco-trials --slurm
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout", "ruff>=0.5", "black>=24"],
        "slurm": [],  # kept so that `pip install .[slurm]` still works: submitit is required now
    },
    entry_points={
        "console_scripts": [
            "moco-synth=synthetic.__main__:main",
            "moco-pretrain=pretrain.train_net:main",
            "moco-convert=convert.__main__:main",
            "moco-detect=detection.train_net:main",
            "moco-trials=detection.trials:main",
            "moco-knn=evaluation.knn:main",
            "moco-lincls=evaluation.linear:main",
            "moco-demo=demo.__main__:main",
        ]
    },
)
