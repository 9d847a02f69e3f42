"""gkdrl: on-policy distillation (GKD) combined with reinforcement learning, in JAX."""

import setuptools

setuptools.setup(
    name="gkdrl",
    version="0.1.0",
    description=(
        "On-policy distillation of language models combined with RL from a "
        "reward model, in JAX and Haiku."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["gkdrl", "gkdrl.*"]),
    python_requires=">=3.11",
    # Lower bounds are the versions the test suite has been run against.
    install_requires=[
        "absl-py>=2.5.1",
        "chex>=0.1.92",
        "datasets>=5.2.0",
        "dm-haiku>=0.0.17",
        "gguf>=0.19.0",
        "jax>=0.10.2",
        "matplotlib>=3.11.2",
        "ml-dtypes>=0.6.0",
        "numpy>=2.4.6",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "rlax>=0.1.9",
        "rouge-score>=0.1.2",
        "safetensors>=0.8.0",
        "tensorboardX>=2.6.5",
        "tokenizers>=0.23.3",
        "tqdm>=4.70.1",
        "transformers>=5.24.0",
    ],
    extras_require={
        # --log_to=wandb logs to Weights & Biases.
        "wandb": ["wandb>=0.31.0"],
        # Only the tests need these; PyTorch is the reference for parity tests
        # and stays out of the runtime dependencies.
        "test": [
            "pytest>=9.2.0",
            "pytest-xdist>=3.8.0",
            "sacrebleu>=2.6.0",
            "tensorboard>=2.21.0",
            "torch==2.13.0",
            "wandb>=0.31.0",
        ],
    },
)
