"""hf_mrl: Matryoshka Representation Learning for the Hugging Face ecosystem.

Importing the package registers its configs and models with the transformers Auto classes, so
`AutoModel.from_pretrained(folder)` returns the Matryoshka class saved there.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from .data import (
    BUILTIN_DATASETS,
    DataArguments,
    DatasetSplits,
    ImageCollator,
    ImageTextCollator,
    PairCollator,
    TextCollator,
    load_classification_dataset,
    load_emoji_pairs,
    load_fashion_mnist,
    load_fashion_mnist_captions,
    load_image_text_dataset,
    load_split,
    load_splits,
    load_wordnet_nouns,
    load_wordnet_pairs,
    slice_split,
    validate_data_arguments,
)
from .evaluation import (
    MatryoshkaCascade,
    MatryoshkaClassificationEvaluator,
    MatryoshkaRetrievalEvaluator,
)
from .hub import (
    card_from_results,
    export_sentence_transformer,
    load_matryoshka_model,
    make_trust_remote_code_ready,
    push_to_hub_with_card,
    save_with_card,
)
from .index import MatryoshkaIndex, QdrantMatryoshkaIndex
from .modeling.configuration_matryoshka import MatryoshkaConfig, MatryoshkaDualEncoderConfig
from .modeling.losses import (
    MatryoshkaContrastiveOutput,
    gather_with_grad,
    matryoshka_contrastive_loss,
    matryoshka_cross_entropy,
    nested_linear_cross_entropy,
)
from .modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel, MatryoshkaDualEncoderOutput
from .modeling.modeling_matryoshka import (
    MatryoshkaClassifierOutput,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
    MatryoshkaModelOutput,
    MatryoshkaPreTrainedModel,
)
from .modeling.nesting import NestedLinear, default_matryoshka_dims, truncate_embeddings
from .training import MatryoshkaTrainer, MatryoshkaTrainingArguments

__version__ = "0.1.0"

AutoConfig.register(MatryoshkaConfig.model_type, MatryoshkaConfig, exist_ok=True)
AutoModel.register(MatryoshkaConfig, MatryoshkaModel, exist_ok=True)
AutoConfig.register(MatryoshkaDualEncoderConfig.model_type, MatryoshkaDualEncoderConfig, exist_ok=True)
AutoModel.register(MatryoshkaDualEncoderConfig, MatryoshkaDualEncoderModel, exist_ok=True)
AutoModelForImageClassification.register(MatryoshkaConfig, MatryoshkaForImageClassification, exist_ok=True)
AutoModelForSequenceClassification.register(MatryoshkaConfig, MatryoshkaForSequenceClassification, exist_ok=True)

__all__ = [
    "MatryoshkaConfig",
    "MatryoshkaModel",
    "MatryoshkaPreTrainedModel",
    "MatryoshkaForImageClassification",
    "MatryoshkaForSequenceClassification",
    "MatryoshkaModelOutput",
    "MatryoshkaClassifierOutput",
    "MatryoshkaDualEncoderConfig",
    "MatryoshkaDualEncoderModel",
    "MatryoshkaDualEncoderOutput",
    "NestedLinear",
    "MatryoshkaTrainer",
    "MatryoshkaTrainingArguments",
    "MatryoshkaIndex",
    "QdrantMatryoshkaIndex",
    "MatryoshkaContrastiveOutput",
    "gather_with_grad",
    "matryoshka_contrastive_loss",
    "matryoshka_cross_entropy",
    "nested_linear_cross_entropy",
    "MatryoshkaClassificationEvaluator",
    "MatryoshkaRetrievalEvaluator",
    "MatryoshkaCascade",
    "ImageCollator",
    "ImageTextCollator",
    "PairCollator",
    "TextCollator",
    "load_classification_dataset",
    "load_emoji_pairs",
    "load_fashion_mnist",
    "load_fashion_mnist_captions",
    "load_image_text_dataset",
    "load_wordnet_nouns",
    "load_wordnet_pairs",
    "BUILTIN_DATASETS",
    "DataArguments",
    "DatasetSplits",
    "load_split",
    "load_splits",
    "slice_split",
    "validate_data_arguments",
    "card_from_results",
    "export_sentence_transformer",
    "load_matryoshka_model",
    "make_trust_remote_code_ready",
    "push_to_hub_with_card",
    "save_with_card",
    "default_matryoshka_dims",
    "truncate_embeddings",
]
