"""Pushing a Matryoshka model with its card to the Hugging Face Hub (or any server speaking its API).

The folder is staged exactly as `save_with_card` writes it, in a temporary directory that is removed
whatever happens, then sent through huggingface_hub's normal upload: `HfApi.create_repo` and one
`HfApi.create_commit` holding every file (the Hub decides per file between inline and LFS / Xet storage).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..modeling.files import temporary_folder
from .saving import _check_model, save_with_card

__all__ = ["push_to_hub_with_card", "check_repo_id"]


def check_repo_id(repo_id) -> str:
    """`repo_id` if it is "name" or "namespace/name" with the Hub's allowed characters, else `ValueError`."""
    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"`repo_id` must be a non-empty string such as 'my-org/my-model', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`repo_id` {repo_id!r} is not a valid Hub repo id ('name' or 'namespace/name'): {error}") from error
    return repo_id


def _resolve_token(token) -> str:
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("`token` must be a non-empty string (a Hub access token with write permission) or None.")
    token = token or get_token()
    if token is None:
        raise ValueError(
            "No Hugging Face token: pass `token=`, set the HF_TOKEN environment variable, or run `hf auth login`."
        )
    return token


def push_to_hub_with_card(
    model,
    repo_id: str,
    results: Mapping | None = None,
    processor=None,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    endpoint: str | None = None,
    trust_remote_code_ready: bool = False,
    **card_kwargs,
) -> CommitInfo:
    """Uploads `model` (safetensors, config, `processor` files, README.md card with per-dim `results` and
    plot, and the modeling code with `trust_remote_code_ready=True`) to the Hub repo `repo_id`, creating the
    repo if needed. Returns huggingface_hub's `CommitInfo` (`.oid`, `.commit_url`, `.pr_url`).

    Args:
        model: an hf_mrl model.
        repo_id (`str`): "namespace/name" (or "name" for the token's own namespace).
        results, processor, trust_remote_code_ready, card_kwargs: as in `save_with_card`.
        token (`str`, *optional*): a write token; defaults to HF_TOKEN or the stored login.
        private (`bool`, *optional*): visibility of a newly created repo.
        revision (`str`, *optional*): branch to commit to (default: the main branch).
        create_pr (`bool`): open a pull request instead of committing to the branch.
        commit_message (`str`, *optional*): defaults to "Upload Matryoshka model".
        endpoint (`str`, *optional*): the Hub URL (default: huggingface_hub's, i.e. `HF_ENDPOINT` or
            https://huggingface.co).

    Arguments are checked and the card rendered before any request; a missing token, a malformed repo id or
    offline mode raise `ValueError` / `RuntimeError` up front. Server errors surface as huggingface_hub's
    `HfHubHTTPError` (with the status code); the local staging folder is removed in every case.
    """
    _check_model(model)
    repo_id = check_repo_id(repo_id)
    token = _resolve_token(token)
    if constants.is_offline_mode():
        raise RuntimeError("Cannot push to the Hub: offline mode is enabled (HF_HUB_OFFLINE=1). Unset it to upload.")
    card_kwargs.setdefault("repo_id", repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    with temporary_folder("hf_mrl-push-") as staging_root:
        folder = save_with_card(
            model,
            Path(staging_root) / "model",
            results,
            processor,
            trust_remote_code_ready=trust_remote_code_ready,
            **card_kwargs,
        )
        operations = [
            CommitOperationAdd(path_in_repo=file.relative_to(folder).as_posix(), path_or_fileobj=str(file))
            for file in sorted(folder.rglob("*"))
            if file.is_file()
        ]
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.create_commit(
            repo_id=repo_url.repo_id,
            operations=operations,
            commit_message=commit_message or "Upload Matryoshka model",
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
