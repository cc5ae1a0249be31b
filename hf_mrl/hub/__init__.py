"""Sharing Matryoshka models: model cards with per-dim results, folders that load without hf_mrl
(trust_remote_code), pushes to the Hugging Face Hub, and sentence-transformers export."""

from .card import (
    MRL_CITATION,
    PLOT_FILE,
    TEMPLATE_PATH,
    ModelSummary,
    card_from_results,
    describe_model,
    group_results,
    model_class_names,
    save_results_plot,
)
from .saving import (
    load_matryoshka_model,
    make_trust_remote_code_ready,
    remote_code_auto_map,
    save_with_card,
    write_card,
)
from .st_export import export_sentence_transformer
from .upload import check_repo_id, push_to_hub_with_card

__all__ = [
    "MRL_CITATION",
    "PLOT_FILE",
    "TEMPLATE_PATH",
    "ModelSummary",
    "card_from_results",
    "check_repo_id",
    "describe_model",
    "export_sentence_transformer",
    "group_results",
    "load_matryoshka_model",
    "make_trust_remote_code_ready",
    "model_class_names",
    "push_to_hub_with_card",
    "remote_code_auto_map",
    "save_results_plot",
    "save_with_card",
    "write_card",
]
