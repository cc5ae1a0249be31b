"""hf_mrl: Matryoshka Representation Learning for the Hugging Face ecosystem.

Importing the package registers its configs and models with the transformers Auto classes.
"""

from .configuration_matryoshka import MatryoshkaConfig
from .nesting import NestedLinear, default_matryoshka_dims, truncate_embeddings

__version__ = "0.1.0"

__all__ = [
    "MatryoshkaConfig",
    "NestedLinear",
    "default_matryoshka_dims",
    "truncate_embeddings",
]
