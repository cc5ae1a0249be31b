"""Bad inputs at the Python API's entry points: each gives a `ValueError` naming the argument, the value and
what is allowed, before any work (the backbones never run: a forward pre-hook counts their calls).

Every case is `(call, words)`: `call(models)` must raise `ValueError` whose message holds every word.
"""

import math

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPConfig, T5Config

from hf_mrl import (
    MatryoshkaConfig,
    MatryoshkaDualEncoderConfig,
    MatryoshkaDualEncoderModel,
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
    NestedLinear,
    matryoshka_contrastive_loss,
    matryoshka_cross_entropy,
    nested_linear_cross_entropy,
    truncate_embeddings,
)
from hf_mrl.evaluation import classification_metrics, retrieval_metrics
from hf_mrl.evaluation.base import per_dim_embeddings
from hf_mrl.evaluation.metrics import top_k_accuracy
from hf_mrl.training import MatryoshkaTrainer, MatryoshkaTrainingArguments

from ..tiny import tiny_bert_config, tiny_vit_config

NAN = float("nan")
INF = float("inf")


class Models:
    """Tiny random models (hidden 32) and a counter of backbone forward calls."""

    def __init__(self, tokenizer_folder: str):
        torch.manual_seed(0)
        vit, bert = tiny_vit_config(), tiny_bert_config()  # 1 channel, 28 x 28; vocabulary 99, 64 positions
        self.vit = MatryoshkaModel(MatryoshkaConfig(backbone_config=vit)).eval()
        self.bert = MatryoshkaModel(MatryoshkaConfig(backbone_config=bert)).eval()
        labels = {"num_labels": 3, "matryoshka_dims": [8, 16, 32]}
        self.vit_classifier = MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=vit, **labels)).eval()
        self.bert_classifier = MatryoshkaForSequenceClassification(MatryoshkaConfig(backbone_config=bert, **labels)).eval()
        self.text = MatryoshkaModel.from_backbone(tokenizer_folder)  # a real tokenizer, for `encode` on raw texts
        self.dual = MatryoshkaDualEncoderModel(
            MatryoshkaDualEncoderConfig(vision_config=vit, text_config=tiny_bert_config(vocab_size=30522), projection_dim=16)
        ).eval()
        self.dual.tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
        self.calls = 0
        for backbone in (self.vit.backbone, self.bert.backbone, self.vit_classifier.matryoshka.backbone,
                         self.bert_classifier.matryoshka.backbone, self.text.backbone, self.dual.vision_model,
                         self.dual.text_model):
            backbone.register_forward_pre_hook(self._count)

    def _count(self, module, inputs) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def models(tiny_text_tower) -> Models:
    return Models(tiny_text_tower)


def pixels(*shape, fill=None) -> torch.Tensor:
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if fill is not None:
        values[0, 0, 0, 0] = fill
    return values


def ids(batch=2, length=12, high=99) -> torch.Tensor:
    return torch.randint(1, high, (batch, length), generator=torch.Generator().manual_seed(0))


def mask(batch=2, length=12, zero_row=None) -> torch.Tensor:
    values = torch.ones(batch, length, dtype=torch.long)
    if zero_row is not None:
        values[zero_row] = 0
    return values


def labels(*values, dtype=torch.long) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def image_with_nan() -> np.ndarray:
    image = np.full((28, 28), 0.5, dtype=np.float32)
    image[3, 4] = NAN
    return image


FORWARD = [
    # vision inputs (the ViT takes (batch, 1, 28, 28))
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 3, 28, 28)), ["pixel_values", "3 channels", "1"], id="pixels-channels"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 1, 32, 32)), ["pixel_values", "32 x 32", "28 x 28"], id="pixels-size"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 1, 28, 20)), ["pixel_values", "28 x 20", "28 x 28"], id="pixels-not-square"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(1, 28, 28)), ["pixel_values", "4-D", "(1, 28, 28)"], id="pixels-3d"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(1, 1, 1, 28, 28)), ["pixel_values", "4-D", "5-D"], id="pixels-5d"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 1, 28, 28).numpy()), ["pixel_values", "torch.Tensor", "ndarray"], id="pixels-numpy"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 1, 28, 28).tolist()), ["pixel_values", "torch.Tensor", "list"], id="pixels-list"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 1, 28, 28, fill=NAN)), ["pixel_values", "NaN"], id="pixels-nan"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(2, 1, 28, 28, fill=INF)), ["pixel_values", "inf"], id="pixels-inf"),
    pytest.param(lambda m: m.vit(pixel_values=torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), ["pixel_values", "floating", "uint8"], id="pixels-uint8"),
    pytest.param(lambda m: m.vit(pixel_values=pixels(0, 1, 28, 28)), ["pixel_values", "empty"], id="pixels-empty-batch"),
    pytest.param(lambda m: m.vit(input_ids=ids()), ["input_ids", "pixel_values", "vision"], id="vision-model-given-ids"),
    pytest.param(lambda m: m.vit(), ["input_ids", "pixel_values"], id="no-inputs"),
    # text inputs (the BERT has 99 tokens and 64 positions)
    pytest.param(lambda m: m.bert(input_ids=ids().float()), ["input_ids", "integer", "float32"], id="ids-float"),
    pytest.param(lambda m: m.bert(input_ids=ids(high=120) + 99), ["input_ids", "vocabulary", "99", "0 to 98"], id="ids-out-of-vocabulary"),
    pytest.param(lambda m: m.bert(input_ids=ids() - 100), ["input_ids", "0 to 98", "-"], id="ids-negative"),
    pytest.param(lambda m: m.bert(input_ids=ids().numpy()), ["input_ids", "torch.Tensor", "ndarray"], id="ids-numpy"),
    pytest.param(lambda m: m.bert(input_ids=ids().tolist()), ["input_ids", "torch.Tensor", "list"], id="ids-list"),
    pytest.param(lambda m: m.bert(input_ids=ids()[0]), ["input_ids", "2-D", "(12,)"], id="ids-1d"),
    pytest.param(lambda m: m.bert(input_ids=ids()[None]), ["input_ids", "2-D", "(1, 2, 12)"], id="ids-3d"),
    pytest.param(lambda m: m.bert(input_ids=ids(batch=0)), ["input_ids", "empty"], id="ids-empty-batch"),
    pytest.param(lambda m: m.bert(input_ids=ids(length=0)), ["input_ids", "empty"], id="ids-no-tokens"),
    pytest.param(lambda m: m.bert(input_ids=ids(length=100)), ["input_ids", "100 tokens", "64"], id="ids-too-long"),
    pytest.param(lambda m: m.bert(input_ids=ids(), attention_mask=mask(length=10)), ["attention_mask", "(2, 10)", "(2, 12)"], id="mask-shape"),
    pytest.param(lambda m: m.bert(input_ids=ids(), attention_mask=mask(zero_row=1)), ["attention_mask", "row 1", "no token"], id="mask-zero-row"),
    pytest.param(lambda m: m.bert(input_ids=ids(), attention_mask=mask().numpy()), ["attention_mask", "torch.Tensor"], id="mask-numpy"),
    pytest.param(lambda m: m.bert(input_ids=ids(), token_type_ids=mask(batch=3)), ["token_type_ids", "(3, 12)", "(2, 12)"], id="token-types-shape"),
    pytest.param(lambda m: m.bert(pixel_values=pixels(2, 1, 28, 28)), ["pixel_values", "input_ids", "text"], id="text-model-given-pixels"),
    # classifiers (3 labels): the labels are checked before the backbone runs
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=labels(0, 3)), ["labels", "0 to 2", "3"], id="labels-above-range"),
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=labels(0, -5)), ["labels", "0 to 2", "-5"], id="labels-negative"),
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=labels(0.0, 1.0, dtype=torch.float32)), ["labels", "integer", "float32"], id="labels-float"),
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=labels(0, 1, 2)), ["labels", "(3,)", "2"], id="labels-batch-mismatch"),
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=labels(0, 1).reshape(1, 2)), ["labels", "(1, 2)", "(2,)"], id="labels-2d"),
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=np.array([0, 1])), ["labels", "torch.Tensor", "ndarray"], id="labels-numpy"),
    pytest.param(lambda m: m.vit_classifier(pixel_values=pixels(2, 1, 28, 28, fill=NAN), labels=labels(0, 1)), ["pixel_values", "NaN"], id="classifier-pixels-nan"),
    pytest.param(lambda m: m.bert_classifier(input_ids=ids(), labels=labels(7, 1)), ["labels", "0 to 2", "7"], id="text-labels-above-range"),
    pytest.param(lambda m: m.bert_classifier(input_ids=ids(high=200)), ["input_ids", "vocabulary"], id="classifier-ids-out-of-vocabulary"),
    # dual encoder
    pytest.param(lambda m: m.dual(pixel_values=pixels(2, 3, 28, 28), input_ids=ids()), ["pixel_values", "3 channels"], id="dual-pixels-channels"),
    pytest.param(lambda m: m.dual(pixel_values=pixels(2, 1, 28, 28, fill=NAN), input_ids=ids()), ["pixel_values", "NaN"], id="dual-pixels-nan"),
    pytest.param(lambda m: m.dual(pixel_values=pixels(2, 1, 28, 28), input_ids=ids() + 40000), ["input_ids", "vocabulary"], id="dual-ids-out-of-vocabulary"),
    pytest.param(lambda m: m.dual(pixel_values=pixels(2, 1, 28, 28), input_ids=ids(), attention_mask=mask(zero_row=0)), ["attention_mask", "row 0"], id="dual-mask-zero-row"),
    pytest.param(lambda m: m.dual(pixel_values=pixels(3, 1, 28, 28), input_ids=ids(), return_loss=True), ["pixel_values", "3 items", "input_ids", "2"], id="dual-loss-batch-mismatch"),
    pytest.param(lambda m: m.dual(pixel_values=pixels(2, 1, 28, 28), input_ids=ids(), return_loss=True, image_ids=[0, 1, 2]), ["image_ids", "2 ints"], id="dual-image-ids-length"),
    pytest.param(lambda m: m.dual(input_ids=ids(), return_loss=True), ["pixel_values", "required"], id="dual-no-pixels"),
    pytest.param(lambda m: m.dual.get_image_features(pixels(2, 1, 28, 28, fill=NAN)), ["pixel_values", "NaN"], id="image-features-nan"),
    pytest.param(lambda m: m.dual.get_image_features(pixels(1, 28, 28)), ["pixel_values", "4-D"], id="image-features-3d"),
    pytest.param(lambda m: m.dual.get_text_features(ids(), attention_mask=mask(length=5)), ["attention_mask", "(2, 5)"], id="text-features-mask-shape"),
    pytest.param(lambda m: m.dual.get_text_features(ids(), normalize="no"), ["normalize", "True or False", "'no'"], id="text-features-normalize-str"),
    pytest.param(lambda m: m.dual.get_image_features(pixels(2, 1, 28, 28), dim=0), ["dim", "1 to 16", "0"], id="image-features-dim-0"),
]

ENCODE = [
    pytest.param(lambda m: m.text.encode(["a cat"], normalize="no"), ["normalize", "True or False", "'no'"], id="encode-normalize-str"),
    pytest.param(lambda m: m.text.encode(["a cat"], normalize=1), ["normalize", "True or False", "1"], id="encode-normalize-int"),
    pytest.param(lambda m: m.bert.encode(input_ids=ids(), normalize="no"), ["normalize", "True or False"], id="encode-tensors-normalize-str"),
    pytest.param(lambda m: m.text.encode(["a cat"], dim=0), ["dim", "1 to 32", "0"], id="encode-dim-0"),
    pytest.param(lambda m: m.text.encode(["a cat"], dim=33), ["dim", "1 to 32", "33"], id="encode-dim-too-big"),
    pytest.param(lambda m: m.text.encode(["a cat"], dim=8.0), ["dim", "integer", "8.0"], id="encode-dim-float"),
    pytest.param(lambda m: m.text.encode(["a cat"], dim=True), ["dim", "integer", "True"], id="encode-dim-bool"),
    pytest.param(lambda m: m.bert.encode(input_ids=ids(), dim=64), ["dim", "1 to 32", "64"], id="encode-tensors-dim-too-big"),
    pytest.param(lambda m: m.text.encode(["a cat"], batch_size=0), ["batch_size", "positive integer", "0"], id="encode-batch-size-0"),
    pytest.param(lambda m: m.text.encode(["a cat"], batch_size=2.5), ["batch_size", "positive integer", "2.5"], id="encode-batch-size-float"),
    pytest.param(lambda m: m.text.encode(["a cat"], batch_size=-3), ["batch_size", "positive integer", "-3"], id="encode-batch-size-negative"),
    pytest.param(lambda m: m.text.encode([]), ["inputs", "empty"], id="encode-empty-list"),
    pytest.param(lambda m: m.text.encode(["a cat", 3]), ["inputs[1]", "int", "strings"], id="encode-mixed-types"),
    pytest.param(lambda m: m.text.encode([np.zeros((28, 28), dtype=np.uint8)]), ["inputs[0]", "ndarray", "text model"], id="encode-text-model-given-image"),
    pytest.param(lambda m: m.text.encode(["a cat"], convert_to_numpy="yes"), ["convert_to_numpy", "True or False"], id="encode-convert-to-numpy-str"),
    pytest.param(lambda m: m.text.encode(["a cat"], convert_to_tensor=1), ["convert_to_tensor", "True or False", "1"], id="encode-convert-to-tensor-int"),
    pytest.param(lambda m: m.bert.encode(input_ids=ids(), convert_to_tensor="yes"), ["convert_to_tensor", "True or False"], id="encode-tensors-convert-to-tensor-str"),
    pytest.param(lambda m: m.dual.encode_text(["a cat"], convert_to_tensor=None), ["convert_to_tensor", "True or False", "None"], id="dual-encode-text-convert-to-tensor-none"),
    pytest.param(lambda m: m.text.encode(["a cat"], show_progress_bar="no"), ["show_progress_bar", "True, False or None"], id="encode-progress-str"),
    pytest.param(lambda m: m.text.encode(["a cat"], input_ids=ids()), ["inputs", "not both"], id="encode-texts-and-tensors"),
    pytest.param(lambda m: m.vit.encode([image_with_nan()]), ["inputs[0]", "NaN"], id="encode-image-nan"),
    pytest.param(lambda m: m.vit.encode([np.full((28, 28), 300.0)]), ["inputs[0]", "0 to 255", "300"], id="encode-image-out-of-range"),
    pytest.param(lambda m: m.vit.encode([np.zeros((2, 28, 28, 1), dtype=np.uint8)]), ["inputs[0]", "(H, W)"], id="encode-image-4d"),
    pytest.param(lambda m: m.vit.encode(["a cat"]), ["inputs[0]", "not an image file"], id="encode-image-model-given-text"),
    pytest.param(lambda m: m.vit.encode([{"image": 1}]), ["inputs[0]", "dict"], id="encode-image-model-given-dict"),
    pytest.param(lambda m: m.vit.encode(pixel_values=pixels(2, 1, 28, 28, fill=NAN)), ["pixel_values", "NaN"], id="encode-tensors-pixels-nan"),
    pytest.param(lambda m: m.dual.encode_text(["a cat"], normalize="no"), ["normalize", "True or False"], id="dual-encode-text-normalize-str"),
    pytest.param(lambda m: m.dual.encode_image([image_with_nan()]), ["inputs[0]", "NaN"], id="dual-encode-image-nan"),
    pytest.param(lambda m: m.dual.encode_text([]), ["inputs", "empty"], id="dual-encode-text-empty"),
    pytest.param(lambda m: m.dual.encode_image(["a cat"], dim=17), ["dim", "1 to 16"], id="dual-encode-image-dim-too-big"),
    pytest.param(lambda m: truncate_embeddings(torch.randn(2, 8), 4, normalize="no"), ["normalize", "True or False"], id="truncate-normalize-str"),
    pytest.param(lambda m: truncate_embeddings(torch.randn(2, 8), 9), ["dim", "1 to 8"], id="truncate-dim-too-big"),
]

PREDICT = [
    pytest.param(lambda m: m.vit_classifier.predict(dim=12, pixel_values=pixels(2, 1, 28, 28)), ["dim", "[8, 16, 32]", "12"], id="predict-dim-not-nested"),
    pytest.param(lambda m: m.vit_classifier.predict(dim="8", pixel_values=pixels(2, 1, 28, 28)), ["dim", "'8'"], id="predict-dim-str"),
    pytest.param(lambda m: m.vit_classifier.predict(return_logits="yes", pixel_values=pixels(2, 1, 28, 28)), ["return_logits", "True or False"], id="predict-return-logits-str"),
    pytest.param(lambda m: m.vit_classifier.predict(pixel_values=pixels(2, 1, 28, 28, fill=NAN)), ["pixel_values", "NaN"], id="predict-pixels-nan"),
    pytest.param(lambda m: m.vit_classifier.predict(pixel_values=pixels(2, 1, 28, 28).numpy()), ["pixel_values", "torch.Tensor"], id="predict-pixels-numpy"),
    pytest.param(lambda m: m.bert_classifier.predict(input_ids=ids(), attention_mask=mask(zero_row=0)), ["attention_mask", "row 0"], id="predict-mask-zero-row"),
    pytest.param(lambda m: m.vit_classifier.predict(), ["input_ids", "pixel_values"], id="predict-no-inputs"),
]


def logits(*shape, fill=None):
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    if fill is not None:
        values.view(-1)[0] = fill
    return values


def heads_weight(labels_count=5, width=16):
    return torch.randn(labels_count, width, generator=torch.Generator().manual_seed(2))


LOSSES = [
    pytest.param(lambda m: matryoshka_cross_entropy(logits(4, 5), labels(0, 1, 2, 3), [1.0]), ["matryoshka_logits", "3-D", "(4, 5)"], id="ce-logits-2d"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5).numpy(), labels(0, 1, 2, 3), [1.0, 1.0]), ["matryoshka_logits", "torch.Tensor"], id="ce-logits-numpy"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5, fill=NAN), labels(0, 1, 2, 3), [1.0, 1.0]), ["matryoshka_logits", "NaN"], id="ce-logits-nan"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5), labels(0, 1, 2, 5), [1.0, 1.0]), ["labels", "0 to 4", "5"], id="ce-labels-above-range"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5), labels(0, 1, 2, 3, dtype=torch.float32), [1.0, 1.0]), ["labels", "integer", "float32"], id="ce-labels-float"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5), labels(0, 1, 2), [1.0, 1.0]), ["labels", "(4,)", "(3,)"], id="ce-labels-shape"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5), labels(0, 1, 2, 3), [1.0]), ["weights", "1 entries", "2"], id="ce-weights-count"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5), labels(0, 1, 2, 3), [1.0, NAN]), ["weights", "finite", "nan"], id="ce-weights-nan"),
    pytest.param(lambda m: matryoshka_cross_entropy(logits(2, 4, 5), labels(0, 1, 2, 3), [1.0, 1.0], label_smoothing=1.5), ["label_smoothing", "[0, 1]", "1.5"], id="ce-smoothing-range"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8, fill=NAN), logits(4, 8), temperature=0.05), ["image_embeds", "NaN"], id="contrastive-nan"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8), logits(4, 8, fill=INF), temperature=0.05), ["text_embeds", "NaN"], id="contrastive-inf"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8), logits(3, 8), temperature=0.05), ["image_embeds", "4 rows", "text_embeds", "3"], id="contrastive-rows"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8), logits(4, 6), temperature=0.05), ["width 8", "width 6"], id="contrastive-widths"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8).numpy(), logits(4, 8), temperature=0.05), ["image_embeds", "tensor"], id="contrastive-numpy"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(8), logits(8), temperature=0.05), ["image_embeds", "2-D"], id="contrastive-1d"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8), logits(4, 8), temperature=NAN), ["temperature", "finite", "nan"], id="contrastive-temperature-nan"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8), logits(4, 8), temperature=0.0), ["temperature", "> 0"], id="contrastive-temperature-0"),
    pytest.param(lambda m: matryoshka_contrastive_loss(logits(4, 8), logits(4, 8), dims=[4, 16], temperature=0.05), ["dims", "16", "embedding dim 8"], id="contrastive-dims"),
    pytest.param(lambda m: nested_linear_cross_entropy(logits(4, 16, fill=NAN), heads_weight(), None, [8, 16], labels(0, 1, 2, 3), [1.0, 1.0]), ["inputs", "NaN"], id="fused-ce-inputs-nan"),
    pytest.param(lambda m: nested_linear_cross_entropy(logits(4, 16), heads_weight(), None, [8, 16], labels(0, 1, 2, 3, dtype=torch.float32), [1.0, 1.0]), ["labels", "integer", "float32"], id="fused-ce-labels-float"),
    pytest.param(lambda m: nested_linear_cross_entropy(logits(4, 16), heads_weight(), None, [8, 16], labels(0, 1, 2, 9), [1.0, 1.0]), ["labels", "0 to 4", "9"], id="fused-ce-labels-range"),
    pytest.param(lambda m: nested_linear_cross_entropy(logits(4, 12), heads_weight(), None, [8, 16], labels(0, 1, 2, 3), [1.0, 1.0]), ["inputs", "12 features", "16"], id="fused-ce-width"),
    pytest.param(lambda m: nested_linear_cross_entropy(logits(4, 16), heads_weight(), None, [8, 16], labels(0, 1, 2, 3), [1.0, NAN]), ["loss_weights", "finite"], id="fused-ce-weights-nan"),
    pytest.param(lambda m: nested_linear_cross_entropy(logits(4, 16), heads_weight(), None, [8, 16], labels(0, 1, 2, 3), [1.0, 1.0], label_smoothing=NAN), ["label_smoothing", "nan"], id="fused-ce-smoothing-nan"),
    pytest.param(lambda m: NestedLinear([8, 16], 5)(logits(4, 12)), ["inputs", "12 features", "16"], id="nested-linear-width"),
]

EVALUATION = [
    pytest.param(lambda m: classification_metrics(logits(6, 16, fill=NAN), [0, 1, 0, 1, 0, 1], knn_k=[1]), ["embeddings", "NaN"], id="classification-nan"),
    pytest.param(lambda m: classification_metrics(logits(6, 16), [0, 1, 0, 1, 0], knn_k=[1]), ["labels", "(6,)"], id="classification-labels-shape"),
    pytest.param(lambda m: classification_metrics(logits(6, 16), [0, 1, 0, 1, 0, 1], dims=[8, 32], knn_k=[1]), ["dims", "1 to 16", "32"], id="classification-dims"),
    pytest.param(lambda m: classification_metrics(logits(6, 16), [0, 1, 0, 1, 0, 1], knn_k=[0]), ["knn_k", "positive integers"], id="classification-knn-0"),
    pytest.param(lambda m: classification_metrics(logits(6, 16), [0, 1, 0, 1, 0, 1], knn_k=[9]), ["knn_k", "9", "5 reference"], id="classification-knn-too-big"),
    pytest.param(lambda m: classification_metrics(logits(6, 16), [0, 1, 0, 1, 0, 1], knn_k=[1], reference_embeddings=logits(4, 16, fill=INF), reference_labels=[0, 1, 0, 1]), ["reference_embeddings", "NaN"], id="classification-reference-inf"),
    pytest.param(lambda m: classification_metrics(logits(6, 16), [0, 1, 0, 1, 0, 1], knn_k=[1], search="bogus"), ["search", "exact", "bogus"], id="classification-search-mode"),
    pytest.param(lambda m: retrieval_metrics(logits(6, 16, fill=NAN), query_labels=[0, 1, 0, 1, 0, 1]), ["query_embeddings", "NaN"], id="retrieval-nan"),
    pytest.param(lambda m: retrieval_metrics(logits(6, 16), query_labels=[0, 1, 0, 1, 0, 1], ks=[0]), ["ks", "positive integers"], id="retrieval-ks-0"),
    pytest.param(lambda m: retrieval_metrics(logits(6, 16)), ["query_labels", "relevant_ids"], id="retrieval-no-relevance"),
    pytest.param(lambda m: per_dim_embeddings(logits(16), [8]), ["embeddings", "2-D"], id="per-dim-1d"),
    pytest.param(lambda m: top_k_accuracy(logits(4, 3, fill=NAN).numpy(), np.array([0, 1, 2, 0])), ["scores", "NaN"], id="top-k-scores-nan"),
    pytest.param(lambda m: top_k_accuracy(logits(4, 3).numpy(), np.array([0, 1, 2, 3])), ["labels", "[0, 2]"], id="top-k-labels-range"),
]

CONFIGS = [
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=CLIPConfig()), ["backbone_config", "clip", "vision_config"], id="config-composite-backbone"),
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=T5Config()), ["backbone_config", "t5", "encoder-decoder"], id="config-encoder-decoder-backbone"),
    pytest.param(lambda m: MatryoshkaDualEncoderConfig(vision_config=tiny_bert_config(), text_config=tiny_bert_config()), ["vision_config", "bert", "image"], id="dual-config-text-as-vision"),
    pytest.param(lambda m: MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_vit_config()), ["text_config", "vit", "text"], id="dual-config-vision-as-text"),
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=tiny_bert_config(), normalize="no"), ["normalize", "True or False"], id="config-normalize-str"),
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=tiny_bert_config(), efficient="yes"), ["efficient", "True or False"], id="config-efficient-str"),
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_dims=[0, 32]), ["matryoshka_dims", "positive integers"], id="config-dims-0"),
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=tiny_bert_config(), matryoshka_weights=[1.0, NAN, 1.0]), ["matryoshka_weights", "finite"], id="config-weights-nan"),
    pytest.param(lambda m: MatryoshkaConfig(backbone_config=tiny_bert_config(), embedding_dim=0), ["embedding_dim", "positive integer"], id="config-embedding-dim-0"),
    pytest.param(lambda m: MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), temperature_init=NAN), ["temperature_init", "nan"], id="dual-config-temperature-nan"),
    pytest.param(lambda m: MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), learn_temperature="no"), ["learn_temperature", "True or False"], id="dual-config-learn-temperature-str"),
    pytest.param(lambda m: MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=tiny_vit_config(), num_labels=1)), ["num_labels", ">= 2"], id="classifier-one-label"),
]

def arguments(**values):
    return MatryoshkaTrainingArguments(output_dir="never-written", report_to="none", **values)


def images(labels, label_feature=None):
    features = datasets.Features({"image": datasets.Image(), "label": label_feature or datasets.Value("int64")})
    rows = {"image": [np.zeros((28, 28), dtype=np.uint8)] * len(labels), "label": list(labels)}
    return datasets.Dataset.from_dict(rows, features=features)


def trainer(model, dataset, **values):
    return MatryoshkaTrainer(model=model, args=arguments(max_steps=1, **values), train_dataset=dataset)


TRAINING = [
    pytest.param(lambda m: arguments(learning_rate=NAN), ["learning_rate", "finite", "nan"], id="args-lr-nan"),
    pytest.param(lambda m: arguments(warmup_steps=NAN), ["warmup_steps", "finite", "nan"], id="args-warmup-nan"),
    pytest.param(lambda m: arguments(num_train_epochs=INF), ["num_train_epochs", "finite", "inf"], id="args-epochs-inf"),
    pytest.param(lambda m: arguments(adam_beta2=1.0), ["adam_beta2", "[0, 1)", "1.0"], id="args-beta-1"),
    pytest.param(lambda m: arguments(temperature=NAN), ["temperature", "finite", "nan"], id="args-temperature-nan"),
    pytest.param(lambda m: arguments(seed=2**40), ["seed", "0 to 4294967295"], id="args-seed-too-big"),
    pytest.param(lambda m: arguments(save_strategy="steps", save_steps=0), ["save_steps", "> 0", "0"], id="args-save-steps-0"),
    pytest.param(lambda m: arguments(eval_dims=[8, 0]), ["eval_dims", "positive integers"], id="args-eval-dims-0"),
    pytest.param(lambda m: trainer(m.vit_classifier, images([0, 1, 4, 2])), ["label 4", "num_labels=3", "0 to 2"], id="trainer-label-above-heads"),
    pytest.param(lambda m: trainer(m.vit_classifier, images([0, 1, -1, 2])), ["label -1", "num_labels=3"], id="trainer-negative-label"),
    pytest.param(lambda m: trainer(m.vit_classifier, images([0, 1, 2, 3], datasets.ClassLabel(names=list("abcd")))), ["4 classes", "num_labels=3"], id="trainer-more-classes-than-heads"),
    pytest.param(lambda m: trainer(m.vit_classifier, images([0.5, 1.0, 0.0, 2.0], datasets.Value("float32"))), ["label", "floats", "0.5"], id="trainer-float-labels"),
    pytest.param(lambda m: trainer(m.bert_classifier, images([0, 1, 2, 0])), ["text", "columns", "image"], id="trainer-image-data-for-text-model"),
    pytest.param(lambda m: trainer(m.vit_classifier, images([0, 1, 2, 0]), eval_dims=[8, 64]), ["eval_dims", "64"], id="trainer-eval-dims-too-big"),
]

ALL = FORWARD + ENCODE + PREDICT + LOSSES + EVALUATION + CONFIGS + TRAINING


@pytest.mark.parametrize(("call", "words"), ALL)
def test_bad_input_is_named_before_any_work(models, call, words):
    before = models.calls
    with pytest.raises(ValueError) as error:
        call(models)
    message = str(error.value)
    missing = [word for word in words if word not in message]
    assert not missing, f"{missing} not in: {message}"
    assert "\n" not in message
    assert models.calls == before, "a backbone ran before the bad input was found"


def test_the_checks_leave_good_inputs_alone(models):
    """The inputs the checks guard still work: padded rows, MRL labels with ignore_index, float images in [0, 1]."""
    output = models.bert(input_ids=ids(), attention_mask=mask(length=12) * torch.tensor([1] * 6 + [0] * 6))
    assert torch.isfinite(output.embeddings).all()
    loss = models.vit_classifier(pixel_values=pixels(2, 1, 28, 28), labels=labels(2, -100)).loss
    assert math.isfinite(float(loss.detach()))
    dark = models.vit.encode([np.zeros((28, 28), dtype=np.float32)])
    bright = models.vit.encode([np.ones((28, 28), dtype=np.float32)])
    assert not np.allclose(dark, bright)  # a float image in [0, 1] is scaled, not cast to a black image
    assert models.text.encode(["a cat"], normalize=False).shape == (1, 32)
