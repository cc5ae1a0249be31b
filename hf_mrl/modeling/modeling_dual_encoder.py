"""ALIGN / CLIP-style image-text dual encoder with Matryoshka embeddings and a contrastive loss at
every nesting dim.

Reads top-down: the output dataclass, the `MatryoshkaDualEncoderModel` (towers, projections, learnt
temperature), then the pretrained-towers constructor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .checks import (
    check_bool,
    check_group_ids,
    check_optional_bool,
    check_pixel_values,
    check_token_inputs,
    refuse_pickled_weights,
)
from .configuration_matryoshka import MatryoshkaConfig, MatryoshkaDualEncoderConfig
from .encoding import (
    default_image_processor,
    encode_inputs,
    inference,
    load_processor,
    resolve_prompt,
    returns_numpy,
    runs_remote_code,
    saved_processor,
)
from .file_checks import check_local_path, check_weights_folder
from .files import MODEL_FOLDER, remove_debris, save_pretrained_atomically
from .losses import matryoshka_contrastive_loss
from .modeling_matryoshka import build_backbone, pool_hidden_states
from .nesting import truncate_embeddings, validate_dim
from .progress import should_show_progress, transformers_progress_bars

__all__ = ["MatryoshkaDualEncoderOutput", "MatryoshkaDualEncoderModel"]

# CLIP clamps its learnt logit scale at 100 (temperature 0.01) to keep training stable.
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class MatryoshkaDualEncoderOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            Weighted sum over nesting dims of the symmetric contrastive loss at that dim.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Full-dim cosine similarities times the logit scale.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Full-dim projected image embeddings, L2-normalised. Truncate with
            `hf_mrl.truncate_embeddings(image_embeds, k)`, which renormalises.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Full-dim projected text embeddings, L2-normalised.
        matryoshka_losses (`torch.FloatTensor` of shape `(num_dims,)`, *optional*):
            Unweighted, detached loss at each nesting dim (`config.matryoshka_dims` order), for logging.
        logit_scale (`torch.FloatTensor` of shape `()`):
            The (clamped) inverse temperature used (with its graph in training, so a loss computed outside the
            forward, as the cached trainer step does, trains it).
        image_features / text_features (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            The projections before normalisation: what the Matryoshka loss truncates, then normalises.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    matryoshka_losses: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None


class MatryoshkaDualEncoderModel(PreTrainedModel):
    """Image tower + text tower, each pooled and projected to `projection_dim`; the first k dims of both
    projections form a shared embedding space for any k."""

    config_class = MatryoshkaDualEncoderConfig
    base_model_prefix = "matryoshka_dual_encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: MatryoshkaDualEncoderConfig):
        super().__init__(config)
        self.vision_model = build_backbone(config.vision_config)
        self.text_model = build_backbone(config.text_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / config.temperature_init)), requires_grad=config.learn_temperature
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's token embeddings (what `resize_token_embeddings` acts on)."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            # transformers' init functions skip parameters already loaded from a checkpoint.
            init.constant_(self.logit_scale, math.log(1.0 / self.config.temperature_init))

    def check_image_inputs(self, pixel_values) -> int:
        """Checks the image tower's input before any work (see `hf_mrl.modeling.checks`); returns the batch size."""
        if pixel_values is None:
            raise ValueError("`pixel_values` (batch, channels, height, width) is required.")
        return check_pixel_values(pixel_values, self.config.vision_config).shape[0]

    def check_text_inputs(self, input_ids, attention_mask=None, token_type_ids=None) -> int:
        """Checks the text tower's inputs before any work; returns the batch size."""
        if input_ids is None:
            raise ValueError("`input_ids` (batch, sequence_length) is required.")
        return check_token_inputs(input_ids, attention_mask, token_type_ids, self.config.text_config).shape[0]
    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, written atomically (a temporary folder, then renamed); an existing
        folder is replaced only when it holds an hf_mrl model (see `hf_mrl.modeling.files.write_folder_atomically`).
        transformers' "Writing model shards" bar is off."""
        with transformers_progress_bars(False):
            save_pretrained_atomically(self, super().save_pretrained, save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a missing local folder or a corrupted weights file is named first."""
        remove_debris(pretrained_model_name_or_path, MODEL_FOLDER)  # of a killed save, before anything is read
        check_local_path(pretrained_model_name_or_path, "pretrained_model_name_or_path")
        check_weights_folder(pretrained_model_name_or_path)
        refuse_pickled_weights(pretrained_model_name_or_path)
        with transformers_progress_bars(should_show_progress()):  # "Loading weights" only where bars are wanted
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _image_embeddings(self, pixel_values: torch.Tensor, check: bool = False) -> torch.Tensor:
        if check:  # the tower-only forward; the two-tower one checks both first
            self.check_image_inputs(pixel_values)
        hidden = self.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state
        return self.visual_projection(pool_hidden_states(hidden, None, self.config.vision_pooling))

    def _text_embeddings(self, input_ids, attention_mask=None, token_type_ids=None, check: bool = False) -> torch.Tensor:
        if check:  # the tower-only forward; the two-tower one checks both first
            self.check_text_inputs(input_ids, attention_mask, token_type_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        hidden = self.text_model(**{k: v for k, v in inputs.items() if v is not None}, return_dict=True).last_hidden_state
        return self.text_projection(pool_hidden_states(hidden, attention_mask, self.config.text_pooling))

    def get_image_features(
        self, pixel_values: torch.Tensor, dim: int | None = None, normalize: bool = True, requires_grad: bool = False
    ) -> torch.Tensor:
        """Projected image embeddings truncated to their first `dim` features (full `projection_dim` when
        None) and L2-renormalised after truncation. Returns a plain `torch.Tensor` of shape (batch, dim),
        not a `ModelOutput`. Runs in eval mode without autograd (the caller's mode is restored) unless
        `requires_grad=True`."""
        dim = validate_dim(dim, self.config.projection_dim)
        check_bool(normalize, "normalize")
        self.check_image_inputs(pixel_values)
        with inference(self, requires_grad):
            return truncate_embeddings(self._image_embeddings(pixel_values), dim, normalize=normalize)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        dim: int | None = None,
        normalize: bool = True,
        requires_grad: bool = False,
    ) -> torch.Tensor:
        """Projected text embeddings truncated to `dim` and renormalised; a `torch.Tensor` (batch, dim). Eval mode
        without autograd unless `requires_grad=True`."""
        dim = validate_dim(dim, self.config.projection_dim)
        check_bool(normalize, "normalize")
        self.check_text_inputs(input_ids, attention_mask, token_type_ids)
        with inference(self, requires_grad):
            return truncate_embeddings(self._text_embeddings(input_ids, attention_mask, token_type_ids), dim, normalize=normalize)

    @property
    def tokenizer(self):
        """The text tower's tokenizer (saved with the model, or the pretrained text encoder's); settable."""
        return load_processor(self, self.config.text_config, vision=False)

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._processor = value

    @property
    def image_processor(self):
        """The image processor saved with the model, else the training collators' preprocessing; settable."""
        processor = getattr(self, "_image_processor", None)
        if processor is None:
            folder = str(self.name_or_path or "")  # a model built from a config has none: never the working directory
            saved = saved_processor(folder, True, runs_remote_code(self)) if folder and Path(folder).expanduser().is_dir() else None
            processor = self._image_processor = saved or default_image_processor(self.config.vision_config)
        return processor

    @image_processor.setter
    def image_processor(self, value) -> None:
        self._image_processor = value

    def encode_text(self, inputs, *, dim: int | None = None, batch_size: int = 32, normalize: bool = True,
                    show_progress_bar: bool | None = None, convert_to_numpy: bool = True, convert_to_tensor: bool = False,
                    device=None, prompt: str | None = None, prompt_name: str | None = None):
        """Raw texts -> text embeddings truncated to `dim` and renormalised, rows in input order (see
        `MatryoshkaModel.encode`, also for `prompt` / `prompt_name` and `config.default_prompt_name`). A float32
        numpy array by default, a tensor with `convert_to_tensor=True` or `convert_to_numpy=False`, as
        `SentenceTransformer.encode` (see `hf_mrl.modeling.encoding.returns_numpy`)."""
        text_prompt = resolve_prompt(self.config.prompts, self.config.default_prompt_name, prompt, prompt_name)
        to_numpy = returns_numpy(convert_to_numpy, convert_to_tensor)
        return self._encode(inputs, False, dim, batch_size, normalize, show_progress_bar, to_numpy, device, text_prompt)

    def encode_image(self, inputs, *, dim: int | None = None, batch_size: int = 32, normalize: bool = True,
                     show_progress_bar: bool | None = None, convert_to_numpy: bool = True, convert_to_tensor: bool = False,
                     device=None):
        """Raw images (PIL images, arrays or paths) -> image embeddings truncated to `dim` and renormalised; the
        return type as `encode_text`'s."""
        to_numpy = returns_numpy(convert_to_numpy, convert_to_tensor)
        return self._encode(inputs, True, dim, batch_size, normalize, show_progress_bar, to_numpy, device)

    def _encode(self, inputs, vision, dim, batch_size, normalize, show_progress_bar, to_numpy: bool, device,
                prompt=None):
        if device is not None:
            self.to(device)

        def forward(batch: dict) -> torch.Tensor:
            if vision:
                self.check_image_inputs(batch["pixel_values"])
                return self._image_embeddings(batch["pixel_values"])
            self.check_text_inputs(**batch)
            return self._text_embeddings(**batch)

        with inference(self):
            return encode_inputs(
                forward, inputs, self.image_processor if vision else self.tokenizer, vision=vision,
                full_dim=self.config.projection_dim, dim=dim, batch_size=batch_size, normalize=normalize,
                show_progress_bar=show_progress_bar, convert_to_numpy=to_numpy, device=self.device,
                num_channels=self.config.vision_config.num_channels if vision else None, prompt=prompt,
            )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        text_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        gather: bool = False,
        **kwargs,
    ) -> MatryoshkaDualEncoderOutput:
        """`image_ids` / `text_ids` (optional, (batch,) ints): items sharing an id are all positives of each
        other (repeated captions or images in a batch). `gather=True` all-gathers the embeddings across
        processes (with gradients) before the loss, so each process scores the global batch. Without
        `return_loss`, one tower's inputs alone embed that side only (the other's outputs are None)."""
        check_optional_bool(return_loss, "return_loss")
        if not return_loss and (pixel_values is None) != (input_ids is None):
            image_raw = None if pixel_values is None else self._image_embeddings(pixel_values, check=True)
            text_raw = None if input_ids is None else self._text_embeddings(input_ids, attention_mask, token_type_ids,
                                                                           check=True)
            return self._output(None, None, image_raw, text_raw)
        image_batch = self.check_image_inputs(pixel_values)
        text_batch = self.check_text_inputs(input_ids, attention_mask, token_type_ids)
        if return_loss:
            if image_batch != text_batch:
                raise ValueError(
                    f"`pixel_values` has {image_batch} items but `input_ids` has {text_batch}; the contrastive loss "
                    "needs one caption per image (pass `image_ids`/`text_ids` for repeated ones)."
                )
            check_group_ids(image_ids, image_batch, "image_ids")
            check_group_ids(text_ids, text_batch, "text_ids")
        image_raw = self._image_embeddings(pixel_values)
        text_raw = self._text_embeddings(input_ids, attention_mask, token_type_ids)
        loss = per_dim = None
        if return_loss:
            result = self.contrastive_loss(image_raw, text_raw, image_ids=image_ids, text_ids=text_ids, gather=gather)
            loss, per_dim = result.loss, result.per_dim_losses
        return self._output(loss, per_dim, image_raw, text_raw)

    def scale(self) -> torch.Tensor:
        """The logit scale the loss uses: exp of the learnt log scale, clamped at 100."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def contrastive_loss(self, image_features, text_features, image_ids=None, text_ids=None, gather=False,
                         logit_scale: torch.Tensor | None = None, mini_batch_size: int | None = None):
        """The symmetric Matryoshka contrastive loss of un-normalised projections (`image_features`,
        `text_features`) with this model's dims, weights, label smoothing and logit scale (or `logit_scale`)."""
        return matryoshka_contrastive_loss(
            image_features,
            text_features,
            dims=self.config.matryoshka_dims,
            weights=self.config.matryoshka_weights,
            logit_scale=self.scale() if logit_scale is None else logit_scale,
            label_smoothing=self.config.label_smoothing,
            image_ids=image_ids,
            text_ids=text_ids,
            gather=gather,
            mini_batch_size=mini_batch_size,
        )

    def _output(self, loss, per_dim, image_raw, text_raw) -> MatryoshkaDualEncoderOutput:
        logit_scale = self.scale()
        image_embeds = None if image_raw is None else truncate_embeddings(image_raw)
        text_embeds = None if text_raw is None else truncate_embeddings(text_raw)
        logits_per_text = None
        if image_embeds is not None and text_embeds is not None:
            logits_per_text = logit_scale.detach() * text_embeds @ image_embeds.t()
        return MatryoshkaDualEncoderOutput(
            loss=loss,
            logits_per_image=None if logits_per_text is None else logits_per_text.t(),
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            matryoshka_losses=per_dim,
            logit_scale=logit_scale,
            image_features=image_raw,
            text_features=text_raw,
        )

    @classmethod
    def from_vision_text_pretrained(cls, vision_name_or_path: str, text_name_or_path: str, **config_kwargs):
        """Builds a dual encoder on pretrained towers (Hub ids or local folders): a plain encoder checkpoint
        (ViT, BERT, all-MiniLM-L6-v2, ...) or an hf_mrl `MatryoshkaModel` checkpoint, whose backbone and
        pooling are reused. Either argument may instead be a transformers config, for a tower trained from scratch. The projections and temperature start fresh; `config_kwargs` go to
        `MatryoshkaDualEncoderConfig`."""
        vision_backbone, vision_pooling = _load_tower(vision_name_or_path)
        text_backbone, text_pooling = _load_tower(text_name_or_path)
        config_kwargs.setdefault("vision_pooling", vision_pooling)
        config_kwargs.setdefault("text_pooling", text_pooling)
        config = MatryoshkaDualEncoderConfig(
            vision_config=vision_backbone.config, text_config=text_backbone.config, **config_kwargs
        )
        model = cls(config)
        for tower, pretrained, name in (
            (model.vision_model, vision_backbone, vision_name_or_path),
            (model.text_model, text_backbone, text_name_or_path),
        ):
            missing, _unexpected_pooler = tower.load_state_dict(pretrained.state_dict(), strict=False)
            if missing:
                raise ValueError(f"`{name}` lacks encoder weights {missing[:5]}; is it an encoder checkpoint?")
        if not isinstance(text_name_or_path, PreTrainedConfig):
            model.config.text_config._name_or_path = str(text_name_or_path)
        return model.eval()  # like from_pretrained: dropout off until training asks for it


def _load_tower(name_or_path) -> tuple[PreTrainedModel, str | None]:
    """The encoder of a checkpoint and its pooling (None: the config's default for that tower); a config
    object instead of a path gives a randomly initialised encoder (a tower trained from scratch)."""
    if isinstance(name_or_path, PreTrainedConfig):
        return build_backbone(name_or_path), None
    check_local_path(name_or_path, "name_or_path")
    refuse_pickled_weights(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path)
    if isinstance(config, MatryoshkaConfig):
        from .modeling_matryoshka import MatryoshkaModel

        matryoshka = MatryoshkaModel.from_pretrained(name_or_path)
        return matryoshka.backbone, config.pooling
    with transformers_progress_bars(should_show_progress()):
        return AutoModel.from_pretrained(name_or_path), None
