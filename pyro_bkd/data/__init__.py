"""Data: the distillation record, real-data loaders, synthetic scenarios, few/zero-shot splits."""

from pyro_bkd.data.loaders import (
    DATASETS,
    Dataset,
    add_input_noise,
    load_cifar10_subset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    standardize,
)
from pyro_bkd.data.record import DistillationData
from pyro_bkd.data.splits import few_shot_indices, zero_shot_indices
from pyro_bkd.data.synthetic import (
    SCENARIOS,
    SyntheticData,
    oracle_teacher_logits,
    synthetic,
    train_mlp_teacher,
    true_probs,
)

__all__ = [
    "DATASETS",
    "SCENARIOS",
    "Dataset",
    "DistillationData",
    "SyntheticData",
    "add_input_noise",
    "few_shot_indices",
    "load_cifar10_subset",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "oracle_teacher_logits",
    "standardize",
    "synthetic",
    "train_mlp_teacher",
    "true_probs",
    "zero_shot_indices",
]
