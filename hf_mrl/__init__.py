"""hf_mrl: Matryoshka Representation Learning for the Hugging Face ecosystem.

Importing the package registers its configs and models with the transformers Auto classes, so
`AutoModel.from_pretrained(folder)` returns the Matryoshka class saved there. Everything loads on first use
(PEP 562, as transformers does): `import hf_mrl` imports neither torch nor transformers' models, nor
sentence-transformers, faiss, Qdrant, datasets or matplotlib; the registration runs as soon as transformers'
Auto classes are loaded (at once when they already are).
"""

import importlib
import importlib.abc
import sys

from .modeling.lazy_exports import lazy_exports

__version__ = "0.1.0"

# Public name -> the module that defines it, imported when the name is first used.
_EXPORTS = {
    "modeling.modeling_matryoshka": [
        "MatryoshkaModel",
        "MatryoshkaPreTrainedModel",
        "MatryoshkaForImageClassification",
        "MatryoshkaForSequenceClassification",
        "MatryoshkaModelOutput",
        "MatryoshkaClassifierOutput",
    ],
    "modeling.modeling_dual_encoder": ["MatryoshkaDualEncoderModel", "MatryoshkaDualEncoderOutput"],
    "modeling.configuration_matryoshka": ["MatryoshkaConfig", "MatryoshkaDualEncoderConfig"],
    "modeling.nesting": ["NestedLinear", "default_matryoshka_dims", "truncate_embeddings"],
    "training": ["MatryoshkaTrainer", "MatryoshkaTrainingArguments"],
    "index": ["MatryoshkaIndex", "QdrantMatryoshkaIndex"],
    "modeling.losses": [
        "MatryoshkaContrastiveOutput",
        "gather_with_grad",
        "matryoshka_contrastive_loss",
        "matryoshka_cross_entropy",
        "nested_linear_cross_entropy",
    ],
    "evaluation": ["MatryoshkaClassificationEvaluator", "MatryoshkaRetrievalEvaluator", "MatryoshkaCascade"],
    "data": [
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
    ],
    "hub": [
        "card_from_results",
        "export_sentence_transformer",
        "load_matryoshka_model",
        "make_trust_remote_code_ready",
        "push_to_hub_with_card",
        "save_with_card",
    ],
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


# -- registration with transformers' Auto classes -----------------------------------------------------------

_MODELS = (  # (Auto class, config class, module:model class)
    ("AutoModel", "MatryoshkaConfig", "modeling_matryoshka:MatryoshkaModel"),
    ("AutoModel", "MatryoshkaDualEncoderConfig", "modeling_dual_encoder:MatryoshkaDualEncoderModel"),
    ("AutoModelForImageClassification", "MatryoshkaConfig", "modeling_matryoshka:MatryoshkaForImageClassification"),
    ("AutoModelForSequenceClassification", "MatryoshkaConfig", "modeling_matryoshka:MatryoshkaForSequenceClassification"),
)


class _DeferredModel:
    """Stands in an Auto class mapping for a model class until it is used, so that registering imports no model
    code: `AutoModel.from_pretrained` / `from_config` call these class methods, which hand over to the real
    class (imported then)."""

    config_class = None
    _target = ""

    @classmethod
    def _model_class(cls):
        module, name = cls._target.split(":")
        return getattr(importlib.import_module(f"{__name__}.modeling.{module}"), name)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls._model_class().from_pretrained(*args, **kwargs)

    @classmethod
    def from_config(cls, *args, **kwargs):
        return cls._model_class()._from_config(*args, **kwargs)

    @classmethod
    def _from_config(cls, *args, **kwargs):
        return cls._model_class()._from_config(*args, **kwargs)


def _configs():
    from .modeling.configuration_matryoshka import MatryoshkaConfig, MatryoshkaDualEncoderConfig

    return {"MatryoshkaConfig": MatryoshkaConfig, "MatryoshkaDualEncoderConfig": MatryoshkaDualEncoderConfig}


def _register_configs() -> None:
    from transformers import AutoConfig

    for config in _configs().values():
        AutoConfig.register(config.model_type, config, exist_ok=True)


def _register_models() -> None:
    import transformers

    configs = _configs()
    for auto_name, config_name, target in _MODELS:
        config = configs[config_name]
        deferred = type(target.split(":")[1], (_DeferredModel,), {"config_class": config, "_target": target})
        getattr(transformers, auto_name).register(config, deferred, exist_ok=True)


_AFTER_IMPORT = {
    "transformers.models.auto.configuration_auto": _register_configs,
    "transformers.models.auto.modeling_auto": _register_models,
}


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs a registration right after transformers' Auto module it needs has been executed."""

    def find_spec(self, name, path, target=None):
        if name not in _AFTER_IMPORT:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _LoaderThenRegister(spec.loader, _AFTER_IMPORT[name])
                return spec
        return None


class _LoaderThenRegister(importlib.abc.Loader):
    def __init__(self, loader, register):
        self.loader, self.register = loader, register

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.register()


for _name, _register in _AFTER_IMPORT.items():
    if _name in sys.modules:
        _register()
if not all(name in sys.modules for name in _AFTER_IMPORT):
    sys.meta_path.insert(0, _RegisterAfterImport())

__all__ = [name for names in _EXPORTS.values() for name in names]
