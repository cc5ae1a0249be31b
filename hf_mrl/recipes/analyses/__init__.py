"""The MRL paper's analyses as runnable experiments on this project's models: robustness under distribution shift,
few-shot learning of novel classes, per-class accuracy on a long tail (with super-classes and confusions), routing
across dims (confidence cascade, disagreement, both), and tuning the loss weights of the nesting dims.

The evaluators these use live in `hf_mrl.evaluation`; this package adds the training runs (through
`run_supervised`), the MRL-vs-FF comparisons, and the tables, JSON and plots (`scripts/run_analyses.py`,
`scripts/tune_weights.py`).
"""

from .experiments import (
    FASHION_MNIST_SUPER_CLASSES,
    IMAGE_ANALYSES,
    TEXT_ANALYSES,
    AnalysisSettings,
    run_image_analyses,
    run_text_analyses,
)
from .runs import load_classifier, train_run
from .weights import (
    head_accuracies,
    pareto_front,
    propose_weightings,
    tune_matryoshka_weights,
    weights_table,
    write_weights_to_config,
)

__all__ = [
    "FASHION_MNIST_SUPER_CLASSES",
    "IMAGE_ANALYSES",
    "TEXT_ANALYSES",
    "AnalysisSettings",
    "head_accuracies",
    "load_classifier",
    "pareto_front",
    "propose_weightings",
    "run_image_analyses",
    "run_text_analyses",
    "train_run",
    "tune_matryoshka_weights",
    "weights_table",
    "write_weights_to_config",
]
