"""Matryoshka models over one transformers encoder: an embedding model and two classifiers.

Reads top-down: output dataclasses, building blocks (backbone construction, pooling), the
`MatryoshkaPreTrainedModel` base, the bare `MatryoshkaModel`, then the classification heads.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import ModelOutput

from .checks import (
    check_bool,
    check_class_labels,
    check_optional_bool,
    check_pixel_values,
    check_token_inputs,
    refuse_pickled_weights,
    saved_weight_shapes,
)
from .configuration_matryoshka import MatryoshkaConfig
from .encoding import encode_inputs, inference, load_processor, resolve_prompt, returns_numpy
from .file_checks import check_local_path, check_weights_folder
from .files import MODEL_FOLDER, remove_debris, save_pretrained_atomically, temporary_folder
from .fused_cross_entropy import nested_heads_cross_entropy
from .nesting import NestedLinear, check_saved_head_shapes, truncate_embeddings, validate_dim
from .progress import should_show_progress, transformers_progress_bars
from .saved_weights import DOWNLOAD_KWARGS, fetch_weights_kept_apart, read_state_dict
from .sentence_transformers_format import (
    encoder_prefix,
    is_sentence_transformers_folder,
    read_sentence_transformers_folder,
    write_sentence_transformers_files,
)

__all__ = [
    "MatryoshkaModelOutput",
    "MatryoshkaClassifierOutput",
    "MatryoshkaPreTrainedModel",
    "MatryoshkaModel",
    "MatryoshkaForImageClassification",
    "MatryoshkaForSequenceClassification",
    "as_matryoshka_model",
    "build_backbone",
    "pool_hidden_states",
]


@dataclass
class MatryoshkaModelOutput(ModelOutput):
    """
    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`):
            Full-dim embeddings after pooling (and projection), NOT normalised. Any prefix `[:, :k]` is the
            embedding at dim k; renormalise it after slicing (`hf_mrl.truncate_embeddings`).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The backbone's last hidden states.
        hidden_states, attentions: the backbone's, when asked for.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MatryoshkaClassifierOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Sum over nesting dims of `matryoshka_weights[m] * cross_entropy(matryoshka_logits[m], labels)`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Logits of the head at the largest nesting dim (the full dim by default), so pipelines, `Trainer`
            and `evaluate` work unchanged. Always returned.
        matryoshka_logits (`torch.FloatTensor` of shape `(num_dims, batch_size, num_labels)`, *optional*):
            Logits of the head at every nesting dim, in `config.matryoshka_dims` order (ascending). Returned when no
            `labels` are given, or when `output_matryoshka_logits=True`: with labels, the loss is computed fused with
            the heads (`hf_mrl.modeling.fused_cross_entropy`) without materialising them.
        matryoshka_losses (`torch.FloatTensor` of shape `(num_dims,)`, *optional*):
            Unweighted, detached cross-entropy at each nesting dim, for logging.
        embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`):
            Full-dim embeddings the heads read, not normalised.
        hidden_states, attentions: the backbone's, when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    matryoshka_logits: torch.FloatTensor | None = None
    matryoshka_losses: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def build_backbone(backbone_config: PreTrainedConfig) -> PreTrainedModel:
    """The bare encoder for `backbone_config`, without its pooler when the class allows (our pooling
    replaces it, and an unused pooler would leave parameters without gradients under DDP)."""
    model_class = MODEL_MAPPING[type(backbone_config)]
    kwargs = {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_config(backbone_config, **kwargs)


def pool_hidden_states(
    last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden): the first token, or the mean over unmasked tokens."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    if attention_mask is None:
        return last_hidden_state.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def is_matryoshka_folder(path: str) -> bool:
    import json
    from pathlib import Path

    config = Path(path).expanduser() / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == MatryoshkaConfig.model_type


def is_sentence_transformer(value) -> bool:
    return type(value).__name__ == "SentenceTransformer" and hasattr(value, "save")


def as_matryoshka_model(model):
    """`model` itself, or for a `SentenceTransformer` object the `MatryoshkaModel` computing the same embeddings
    (scored at every power-of-two truncation, like any non-MRL baseline)."""
    return MatryoshkaModel.from_backbone(model) if is_sentence_transformer(model) else model


def _from_sentence_transformer_object(cls, st_model, config_kwargs):
    """A `SentenceTransformer` object: written to a temporary folder and read like one; its tokenizer is kept."""
    with temporary_folder("hf_mrl-st-") as folder:
        st_model.save(folder, create_model_card=False)
        model = cls.from_backbone(folder, **config_kwargs)
    model.config.backbone_config._name_or_path = ""
    model.processor = st_model.tokenizer
    return model


def _layout_settings(layout) -> dict:
    settings = {"pooling": layout.pooling, "normalize": layout.normalize}
    if layout.prompts is not None:
        settings.update(prompts=layout.prompts, default_prompt_name=layout.default_prompt_name)
    if layout.dense_weight is not None:
        settings.update(embedding_dim=layout.dense_weight.shape[0], use_projection=True)
    if layout.matryoshka_dims:
        settings["matryoshka_dims"] = layout.matryoshka_dims
    return settings


def _load_dense(projection: nn.Linear, layout, source) -> None:
    if projection is None or projection.weight.shape != layout.dense_weight.shape:
        raise ValueError(
            f"`{source}` has a Dense layer of shape {tuple(layout.dense_weight.shape)}; the projection must match it "
            f"(leave `embedding_dim` unset), got {None if projection is None else tuple(projection.weight.shape)}."
        )
    with torch.no_grad():
        projection.weight.copy_(layout.dense_weight)
        projection.bias.copy_(layout.dense_bias if layout.dense_bias is not None else torch.zeros_like(projection.bias))


class MatryoshkaPreTrainedModel(PreTrainedModel):
    config_class = MatryoshkaConfig
    base_model_prefix = "matryoshka"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @classmethod
    def from_backbone(cls, name_or_path, **config_kwargs):
        """Builds a Matryoshka model on a plain pretrained encoder (a Hub id or a local folder, e.g. a ViT or BERT)
        or on a sentence-transformers model (its folder, or a `SentenceTransformer` object), with the encoder's
        weights loaded; `config_kwargs` go to `MatryoshkaConfig` (`embedding_dim`, `matryoshka_dims`, `num_labels`,
        ...). A sentence-transformers model keeps its Pooling, Dense (as the projection) and Normalize, so the full
        embedding equals `SentenceTransformer.encode`'s. New layers (projection, heads) are randomly initialised."""
        if is_sentence_transformer(name_or_path):
            return _from_sentence_transformer_object(cls, name_or_path, config_kwargs)
        check_local_path(name_or_path, "name_or_path")
        layout = read_sentence_transformers_folder(name_or_path) if is_sentence_transformers_folder(name_or_path) else None
        encoder_path = str(layout.transformer_path) if layout is not None else name_or_path
        refuse_pickled_weights(encoder_path)
        if layout is not None:
            config_kwargs = {**_layout_settings(layout), **config_kwargs}
        backbone_config = AutoConfig.from_pretrained(encoder_path)
        model = cls(MatryoshkaConfig(backbone_config=backbone_config, **config_kwargs))
        with transformers_progress_bars(should_show_progress()):  # "Loading weights" only where bars are wanted
            pretrained = AutoModel.from_pretrained(encoder_path)
        base = getattr(model, cls.base_model_prefix, model)
        missing, _unexpected_pooler = base.backbone.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:
            raise ValueError(f"`{name_or_path}` lacks backbone weights {missing[:5]}... ; is it a {backbone_config.model_type} encoder?")
        if layout is not None and layout.dense_weight is not None:
            _load_dense(base.projection, layout, name_or_path)
        model.config.backbone_config._name_or_path = str(encoder_path)
        if layout is not None and layout.max_seq_length:
            model.processor.model_max_length = layout.max_seq_length  # texts cut where sentence-transformers cuts them
        return model.eval()  # like from_pretrained: dropout off until training asks for it

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's input embeddings (token embeddings of a text encoder, patch embeddings of a ViT): what
        NEFTune and `resize_token_embeddings` act on."""
        return getattr(self, self.base_model_prefix, self).backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        getattr(self, self.base_model_prefix, self).backbone.set_input_embeddings(value)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the tokenizer / image processor `encode` uses, so the folder
        embeds raw inputs on its own. A text model's folder also loads in sentence-transformers; its encoder's
        weights are then saved once, under `0_Transformer/`, and the root `model.safetensors` holds the rest
        (see `hf_mrl.modeling.saved_weights`). Written atomically (a temporary folder, then renamed): a kill or a
        full disk never leaves a half-written folder. An existing folder is replaced only when it holds an hf_mrl
        model, keeping files hf_mrl did not write (see `hf_mrl.modeling.files.write_folder_atomically`).
        transformers' "Writing model shards" bar is off."""
        with transformers_progress_bars(False):
            save_pretrained_atomically(self, self._write_pretrained, save_directory, *args, **kwargs)

    def _write_pretrained(self, save_directory, *args, state_dict=None, **kwargs) -> None:
        processor = self._resolvable_processor()
        # the sentence-transformers layout beside ours, where that library is installed: it holds the encoder, the
        # root gets the rest
        sentence_transformers_files = (processor is not None and self.main_input_name == "input_ids"
                                       and importlib.util.find_spec("sentence_transformers") is not None)
        if not sentence_transformers_files:
            super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
            if processor is not None:
                processor.save_pretrained(save_directory)
            return
        state_dict = self.state_dict() if state_dict is None else state_dict
        prefix = encoder_prefix(self)
        rest = {name: value for name, value in state_dict.items() if not name.startswith(prefix)}
        super().save_pretrained(save_directory, *args, state_dict=rest, **kwargs)
        processor.save_pretrained(save_directory)
        write_sentence_transformers_files(self, save_directory, processor, state_dict)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; the encoder of a text model's folder is read from `0_Transformer/`,
        where it is kept (see `hf_mrl.modeling.saved_weights`). A folder that sentence-transformers saved (e.g.
        after `SentenceTransformerTrainer` trained an hf_mrl model) is read like `from_backbone` reads it."""
        remove_debris(pretrained_model_name_or_path, MODEL_FOLDER)  # of a killed save, before anything is read
        check_local_path(pretrained_model_name_or_path, "pretrained_model_name_or_path")
        check_weights_folder(pretrained_model_name_or_path)
        path = str(pretrained_model_name_or_path)
        if is_sentence_transformers_folder(path) and not is_matryoshka_folder(path):
            return cls.from_backbone(path, **kwargs)
        refuse_pickled_weights(pretrained_model_name_or_path)
        cls._check_saved_heads(pretrained_model_name_or_path, kwargs)
        folder = fetch_weights_kept_apart(path, **{key: kwargs[key] for key in DOWNLOAD_KWARGS if key in kwargs})
        with transformers_progress_bars(should_show_progress()):  # "Loading weights" only where bars are wanted
            if folder is None:
                return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            # the weights from two files: transformers takes them as one state dict, and the config from the folder
            config = kwargs.pop("config", None)
            loaded = super().from_pretrained(None, *args, config=path if config is None else config,
                                             state_dict=read_state_dict(folder), **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) with output_loading_info
        model.config.name_or_path = path  # what transformers records of a folder it loads itself
        for module in model.modules():
            if isinstance(module, PreTrainedModel) and module.config is model.config:
                module.name_or_path = path
        return loaded

    @classmethod
    def _check_saved_heads(cls, folder, kwargs) -> None:
        """A classifier's config (the folder's, with the overrides in `kwargs`, as `from_pretrained` builds it) must
        build the heads the weights hold: else a head would be dropped or reinitialised without a word."""
        if not issubclass(cls, _MatryoshkaForClassification):
            return
        shapes = saved_weight_shapes(folder)
        if shapes is None:
            return
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            config_kwargs = {key: value for key, value in kwargs.items() if key in ("matryoshka_dims", "num_labels", "efficient")}
            config = cls.config_class.from_pretrained(folder, **config_kwargs)
        heads = {name[len("heads."):]: shape for name, shape in shapes.items() if name.startswith("heads.")}
        check_saved_head_shapes(heads, config.matryoshka_dims, config.num_labels, config.efficient, folder)

    def _resolvable_processor(self):
        try:
            return self.processor
        except (ValueError, OSError):  # nothing to save: a model built from a config with no tokenizer set
            return None

    @property
    def processor(self):
        """The tokenizer or image processor `encode` uses on raw inputs (see `hf_mrl.modeling.encoding.load_processor`)."""
        return load_processor(self, self.config.backbone_config, self.main_input_name == "pixel_values")

    @processor.setter
    def processor(self, value) -> None:
        self._processor = value

    def encode(
        self,
        inputs=None,
        *,
        dim: int | None = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device=None,
        requires_grad: bool = False,
        prompt: str | None = None,
        prompt_name: str | None = None,
        **tensor_inputs,
    ):
        """Embeddings truncated to their first `dim` features (full dim when None), L2-renormalised after truncation
        unless `normalize=False` (default: `config.normalize`).

        `inputs` is a list of raw texts (text models) or images (PIL images, paths, or (H, W[, C]) arrays: uint8, or
        floats in [0, 1] or [0, 255]; vision models), embedded
        in batches of `batch_size` with the model's tokenizer / image processor; rows come back in input order. The
        tensor form (`encode(input_ids=..., ...)`) embeds one prepared batch. Runs in eval mode without autograd (the
        caller's mode is restored) unless `requires_grad=True`.

        Returns, as `SentenceTransformer.encode`: a float32 numpy array (on the CPU) of shape (n, dim) by default, or
        (dim,) for one string / image; a `torch.Tensor` on the model's device with `convert_to_tensor=True` (which
        wins over `convert_to_numpy`) or `convert_to_numpy=False` (sentence-transformers gives a list of tensors
        then; this gives one tensor). `requires_grad=True` always returns a tensor carrying the graph, whatever
        `convert_to_numpy` says (numpy holds no graph). The same rule holds for the tensor form.

        Raw texts are prefixed before tokenisation with `prompt`, or with `config.prompts[prompt_name]`, or, given
        neither, with the prompt named by `config.default_prompt_name` (as `SentenceTransformer.encode`; see
        `hf_mrl.modeling.encoding.resolve_prompt`). Images and tensors take no prompt.
        """
        vision = self.main_input_name == "pixel_values"
        if (vision or inputs is None) and (prompt is not None or prompt_name is not None):
            given, value = ("prompt", prompt) if prompt is not None else ("prompt_name", prompt_name)
            raise ValueError(f"`{given}`={value!r} prefixes raw texts; {'images' if vision else 'tensor inputs'} take "
                             "no prompt.")
        text_prompt = None if vision or inputs is None else resolve_prompt(
            self.config.prompts, self.config.default_prompt_name, prompt, prompt_name)
        normalize = self.config.normalize if normalize is None else check_bool(normalize, "normalize")
        check_optional_bool(show_progress_bar, "show_progress_bar")
        to_numpy = returns_numpy(convert_to_numpy, convert_to_tensor, requires_grad)
        if device is not None:
            self.to(device)
        with inference(self, requires_grad):
            if inputs is None:
                dim = validate_dim(dim, self.config.embedding_dim)
                embeddings = truncate_embeddings(self._embed(tensor_inputs), dim, normalize=normalize)
                return embeddings.float().cpu().numpy() if to_numpy else embeddings
            if tensor_inputs:
                raise ValueError(f"Pass raw `inputs` or tensors ({sorted(tensor_inputs)}), not both.")
            return encode_inputs(
                self._embed, inputs, self.processor, vision=vision,
                full_dim=self.config.embedding_dim, dim=dim, batch_size=batch_size, normalize=normalize,
                show_progress_bar=show_progress_bar, convert_to_numpy=to_numpy, device=self.device,
                num_channels=getattr(self.config.backbone_config, "num_channels", None), prompt=text_prompt,
            )


class MatryoshkaModel(MatryoshkaPreTrainedModel):
    """Encoder + pooling (+ projection) -> one embedding whose first k dims are an embedding for any k."""

    # Loading a classifier checkpoint as a bare embedding model drops its heads on purpose.
    _keys_to_ignore_on_load_unexpected = [r"^heads\."]

    def __init__(self, config: MatryoshkaConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.main_input_name = self.backbone.main_input_name
        hidden_size = config.backbone_config.hidden_size
        self.projection = nn.Linear(hidden_size, config.embedding_dim) if config.uses_projection else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> MatryoshkaModelOutput:
        self.check_inputs(input_ids, attention_mask, token_type_ids, pixel_values, **kwargs)
        return self.forward_checked(
            input_ids, attention_mask, token_type_ids, pixel_values, output_hidden_states, output_attentions, **kwargs
        )

    def check_inputs(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None, **kwargs) -> int:
        """Checks `forward`'s inputs before any work (types, shapes, dtypes, vocabulary, image size, empty mask rows,
        NaN / inf pixels; see `hf_mrl.modeling.checks`) and returns the batch size."""
        backbone_config = self.config.backbone_config
        if self.main_input_name == "pixel_values":
            if pixel_values is None:
                raise ValueError(
                    "Pass `pixel_values` (batch, channels, height, width): this is a vision model, it takes no "
                    f"`input_ids`{' (given)' if input_ids is not None else ''}."
                )
            check_pixel_values(pixel_values, backbone_config, check_size=not kwargs.get("interpolate_pos_encoding"))
            return pixel_values.shape[0]
        if pixel_values is not None:
            raise ValueError("`pixel_values` given to a text model; pass `input_ids` (batch, sequence_length) from its tokenizer.")
        if input_ids is None:
            if "inputs_embeds" in kwargs:
                return kwargs["inputs_embeds"].shape[0]
            raise ValueError("Pass `input_ids` (text backbones) or `pixel_values` (vision backbones).")
        if self.main_input_name == "input_ids":
            check_token_inputs(input_ids, attention_mask, token_type_ids, backbone_config)
        return input_ids.shape[0]

    def forward_checked(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None,
                        output_hidden_states=None, output_attentions=None, **kwargs) -> MatryoshkaModelOutput:
        """`forward` on inputs `check_inputs` has passed (the classifiers check them, and their labels, first)."""
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "pixel_values": pixel_values,
            "output_hidden_states": output_hidden_states,
            "output_attentions": output_attentions,
        }
        inputs = {name: value for name, value in inputs.items() if value is not None}
        outputs = self.backbone(**inputs, **kwargs, return_dict=True)
        pooled = pool_hidden_states(outputs.last_hidden_state, attention_mask, self.config.pooling)
        embeddings = self.projection(pooled) if self.projection is not None else pooled
        return MatryoshkaModelOutput(
            embeddings=embeddings,
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.get("hidden_states"),
            attentions=outputs.get("attentions"),
        )

    def _embed(self, inputs: dict) -> torch.Tensor:
        return self(**inputs).embeddings


class _MatryoshkaForClassification(MatryoshkaPreTrainedModel):
    """Nested linear heads over the embedding: one per nesting dim (MRL) or slices of one (MRL-E)."""

    def __init__(self, config: MatryoshkaConfig):
        super().__init__(config)
        if config.num_labels is None or config.num_labels < 2:
            raise ValueError(f"`num_labels` must be an integer >= 2 for classification, got {config.num_labels!r}.")
        self.matryoshka = MatryoshkaModel(config)
        self.main_input_name = self.matryoshka.main_input_name
        self.heads = NestedLinear(config.matryoshka_dims, config.num_labels, efficient=config.efficient)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_matryoshka_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        label_smoothing: float = 0.0,
        **kwargs,
    ) -> MatryoshkaClassifierOutput:
        """With `labels`, the loss at every nesting dim is computed fused with the heads (smoothed by
        `label_smoothing`, as `nn.CrossEntropyLoss`'s), and `matryoshka_logits` is None unless
        `output_matryoshka_logits=True` (which costs one more pass of every head); without labels it is always
        returned. `logits` (the largest dim) is always returned. The inputs and labels are checked before any
        work."""
        batch = self.matryoshka.check_inputs(input_ids, attention_mask, token_type_ids, pixel_values, **kwargs)
        if labels is not None:
            check_class_labels(labels, batch, self.config.num_labels)
        outputs = self.matryoshka.forward_checked(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_values=pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )
        embeddings = outputs.embeddings
        loss = per_dim_losses = matryoshka_logits = None
        if labels is None or output_matryoshka_logits:
            matryoshka_logits = self.heads(embeddings)
        if labels is None:
            logits = matryoshka_logits[-1]
        else:
            loss, per_dim_losses, logits = nested_heads_cross_entropy(
                self.heads, embeddings, labels.to(embeddings.device), self.config.matryoshka_weights,
                label_smoothing=label_smoothing,
            )
        return MatryoshkaClassifierOutput(
            loss=loss,
            logits=logits,
            matryoshka_logits=matryoshka_logits,
            matryoshka_losses=per_dim_losses,
            embeddings=outputs.embeddings,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def predict(self, dim: int | None = None, return_logits: bool = False, **inputs) -> torch.Tensor:
        """Class ids (or logits with `return_logits=True`) from the head at `dim` alone (default: the largest
        nesting dim), in eval mode. MRL-E models accept any dim; MRL models accept their nesting dims."""
        check_bool(return_logits, "return_logits")
        dim = self.heads.check_dim(self.config.matryoshka_dims[-1] if dim is None else dim)
        with inference(self):
            logits = self.heads.logits_at(self.matryoshka(**inputs).embeddings, dim)
        return logits if return_logits else logits.argmax(dim=-1)

    def _embed(self, inputs: dict) -> torch.Tensor:
        return self.matryoshka(**inputs).embeddings


class MatryoshkaForImageClassification(_MatryoshkaForClassification):
    main_input_name = "pixel_values"


class MatryoshkaForSequenceClassification(_MatryoshkaForClassification):
    main_input_name = "input_ids"
