"""Adaptive retrieval at scale, measured side by side in one run: full-dim exact search (faiss IndexFlatIP),
full-dim HNSW (faiss IndexHNSWFlat), and MatryoshkaIndex's adaptive (low-dim HNSW shortlist + full-dim
re-rank) and funnel searches, on one database of real embeddings.

The database (built by `retrieval_database.py`) holds real embeddings from a model trained with hf_mrl, grown
past 1,000,000 vectors with real embeddings of augmented items:
- fashion-mnist: the 70,000 images minus the held-out queries, each encoded as itself (copy 0) and as
  `--copies - 1` augmented copies (shift of up to 3 px, horizontal flip with p=0.5, contrast x0.75-1.25,
  Gaussian pixel noise of sigma 12; seeded per copy): 69,000 x 15 = 1,035,000 vectors by default.
  Queries: `--num_queries` test images (none of their copies is in the database); relevant = same class.
- wordnet (reverse dictionary): every word form of every synset written in `--copies` templates
  ("{w}", "the word {w}", ...) plus every example sentence; queries: definitions of held-out test-split
  synsets; relevant = the rows holding one of that synset's word forms (by word: a word's rows in its other
  synsets are the same text, so the same embedding).

Embeddings are cached under `--out`/cache/<data, model, sizes>/ (one file per copy while encoding, so an
interrupted run resumes); so are the built indexes. With every WordNet item (`--num_items` left out) another
`--num_queries` only encodes its queries: the database and indexes are hard-linked from the cache of the same
database (`retrieval_database.lend_database`). `--embeddings DIR/database.npy` skips encoding and
reads `database_labels.npy`, `queries.npy` and `query_labels.npy` (or `query_relevant.npy`, ids padded
with -1) from the same folder, the layout this script writes.

Usage:
  python scripts/bench_retrieval.py --model runs/fmnist-vit --data fashion-mnist --out bench_out/retrieval
  python scripts/bench_retrieval.py --model random-vit --data fashion-mnist --num_items 3000 --copies 2 \
      --num_queries 100 --out /tmp/bench_retrieval        # plumbing only: an untrained random ViT
  python scripts/bench_retrieval.py --model minilm --data wordnet --num_items 20000 --copies 2

`--backend qdrant` also runs the adaptive and funnel settings through `QdrantMatryoshkaIndex` on the embedded
engine (Qdrant Edge, collections cached under `--out`/cache/; `--qdrant_url` for a server), each setting with
its HNSW shortlist (and with an exact one under --qdrant_exact_shortlists), as rows "adaptive (qdrant)" /
"funnel (qdrant)" next to the faiss index's: the same multi-stage search, run by the engine in one request per
query batch. Qdrant Edge searches with its own thread pool; pin the process (`taskset -c 0`) for one-core numbers.

Prints one row per method and setting: mAP@10 (the MRL paper's variant), recall@10 (over all relevant
items, tiny when a class has 100k members), nn_recall@10 (overlap with exact full-dim top 10), QPS,
speed-up vs exact. Then, at equal quality (mAP@10 within 0.5 point of exact full-dim search), each
method's fastest setting; those of exact search, full-dim HNSW and each engine's adaptive and funnel search (and
Qdrant's rows with faiss's chosen settings: the engine's speed on the same plan) are then timed again side by
side, taking turns (`--paired_rounds` turns, each search repeated over all queries for about `--paired_seconds`):
on a shared machine QPS drifts by 10-35% over a run, so two rows measured minutes apart do not give a ratio. The
targets use the median of the per-turn ratios: adaptive >= 30x exact QPS and >= 1.3x full-dim HNSW's, and with
`--backend qdrant` the engine's adaptive and funnel >= 0.5x faiss's. Build times are kept beside the cache.
Saves `retrieval.json` and `retrieval.png` (QPS vs mAP@10, Pareto front) under `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import faiss
import numpy as np
import torch
from benchmarking import interleaved_times, paired_ratio
from retrieval_database import build_database, load_database, load_model
from threadpoolctl import threadpool_limits

from hf_mrl.evaluation.metrics import average_precisions_at_k, standard_error
from hf_mrl.evaluation.sweep import (
    evaluate_faiss_index,
    evaluate_funnel,
    mark_pareto_front,
    save_sweep,
    score_results,
    sweep_index,
    timed_search,
)
from hf_mrl.index import MatryoshkaIndex, QdrantMatryoshkaIndex
from hf_mrl.modeling.files import write_file_atomically

K = 10
EQUAL_QUALITY = 0.005  # "equal mAP@10": within 0.5 point of exact full-dim search
TARGET_VS_EXACT = 30.0
TARGET_VS_HNSW = 1.3
TARGET_QDRANT_VS_FAISS = 0.5
# The methods whose fastest settings at equal quality are timed again side by side for the targets.
PAIRED_METHODS = ("exact (flat)", "hnsw (full dim)", "adaptive", "funnel", "adaptive (qdrant)", "funnel (qdrant)")
SETTING_KEYS = ("shortlist_index", "shortlist_storage", "shortlist_dim", "shortlist_size", "rerank_dim", "ef_search",
                "funnel_dims", "funnel_sizes")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", help="a saved hf_mrl model folder, or 'random-vit' / 'minilm' (untrained, plumbing)")
    parser.add_argument("--data", choices=["fashion-mnist", "wordnet"], default="fashion-mnist")
    parser.add_argument("--embeddings", type=Path, help="DIR/database.npy of a previous run: skip encoding")
    parser.add_argument("--out", type=Path, default=Path("bench_out/retrieval"))
    parser.add_argument("--num_items", type=int, help="base items before augmentation (default: all)")
    parser.add_argument("--copies", type=int, default=15, help="encodings per item: the item + augmented copies")
    parser.add_argument("--num_queries", type=int, default=1000,
                        help="held-out queries; equal quality needs enough of them: on 1M WordNet rows mAP@10's "
                             "standard error is ~0.7 point over 1,000 (wider than the 0.5-point window), ~0.31 over "
                             "5,000")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--bf16", action="store_true",
                        help="encode under bfloat16 autocast (about 2x faster on CPUs with bf16 units; cached apart)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hnsw_m", type=int, default=32)
    parser.add_argument("--ef_construction", type=int, default=80)
    parser.add_argument("--hnsw_ef", default="10,12,16,24,32,48,64,128",
                        help="efSearch values of the full-dim HNSW baseline (from k = 10: faiss searches no narrower)")
    parser.add_argument("--ivfpq", default="auto",
                        help="the full-dim IVF-PQ baseline, refined at full precision: a faiss factory string, or 'auto' "
                             "(IVF with about sqrt(N) lists, a power of 2, and PQ with one 8-bit code per 8 dims); '' for none")
    parser.add_argument("--ivfpq_nprobe", default="8,16,32,64", help="nprobe values of the IVF-PQ baseline")
    parser.add_argument("--ivfpq_k_factor", type=int, default=4, help="IVF-PQ candidates re-ranked exactly: k x this")
    parser.add_argument("--shortlist_indexes", default="ivf,hnsw",
                        help="faiss structures of the adaptive shortlists, each optionally ':int8' / ':float16' (codes stored); "
                             "'ivf@16': IVF lists clustered at 16 dims, scored at the shortlist dim (AdANNS-IVF)")
    parser.add_argument("--shortlist_dims", default="16,32", help="dims of the adaptive shortlists")
    parser.add_argument("--shortlist_sizes", default="10,20,40,80")
    parser.add_argument("--shortlist_m", type=int, default=16, help="HNSW M of the low-dim shortlist graphs")
    parser.add_argument("--ef_search", default="16", help="efSearch values of HNSW shortlists (raised to the size)")
    parser.add_argument("--nlist", type=int, help="IVF lists of the shortlists (default: 4 * sqrt(N))")
    parser.add_argument("--nprobe", default="2,4,8", help="nprobe values of IVF shortlists")
    parser.add_argument("--rerank_dims", default="full", help="re-rank dims ('full' = the stored dim)")
    parser.add_argument("--funnels", default="16,32,64,full:80,40,20,10;16,32,full:40,20,10",
                        help="funnels 'dims:sizes' separated by ';' (dims start at a shortlist dim), run on each "
                             "shortlist index at its first ef_search / nprobe")
    parser.add_argument("--binary_dims", default="64",
                        help="dims of extra binary (Hamming) shortlists ('full' = the stored dim); '' for none")
    parser.add_argument("--binary_shortlist_index", choices=["flat", "hnsw"], default="flat",
                        help="structure of the --binary_dims shortlists: a flat scan of the codes (shortlists of 50, "
                             "200, 800), or an HNSW graph over them (--shortlist_m, --ef_construction) swept like the "
                             "other HNSW shortlists")
    parser.add_argument("--backend", choices=["faiss", "qdrant"], default="faiss",
                        help="qdrant: also run the adaptive / funnel settings on a Qdrant collection (embedded engine)")
    parser.add_argument("--qdrant_binary_dims", help="qdrant: dims of binary-quantised shortlists (default: --binary_dims)")
    parser.add_argument("--qdrant_shortlist_storages", default="float32", choices=["float32", "int8", "float32,int8"],
                        help="qdrant: what the HNSW shortlist vectors' index holds (int8: Qdrant's scalar quantisation, "
                             "searched without rescoring), one collection each")
    parser.add_argument("--qdrant_exact_shortlists", action="store_true",
                        help="qdrant: also time exact (brute-force) shortlists (slow: a full scan per query)")
    parser.add_argument("--qdrant_url", help="a Qdrant server for --backend qdrant (default: the embedded engine)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (best kept)")
    parser.add_argument("--paired_rounds", type=int, default=7, help="turns of the side-by-side timing of the chosen settings")
    parser.add_argument("--paired_seconds", type=float, default=1.0,
                        help="length of each search's turn: all queries, repeated to last about this long (by the "
                             "sweep's QPS; a 0.1 s run moves by 30%% with one hiccup of a shared machine)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of faiss, BLAS, torch and Qdrant Edge's searches for every method (1: steady timings on a "
                             "shared machine)")
    args = parser.parse_args()
    if args.paired_rounds < 1:
        parser.error(f"--paired_rounds must be >= 1, got {args.paired_rounds}")
    if not args.paired_seconds > 0:
        parser.error(f"--paired_seconds must be > 0, got {args.paired_seconds}")
    return args


def int_list(text: str, full_dim: int | None = None) -> list:
    return [full_dim if item == "full" else int(item) for item in text.split(",") if item.strip()]


# -- the methods ---------------------------------------------------------------------------------------------------


BUILD_TIMES = "build_seconds.json"  # beside the cached indexes: how long each took to build (wall clock)


def record_build_time(cache: Path, name: str, seconds: float) -> None:
    path = cache / BUILD_TIMES
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[name] = round(seconds, 1)
    write_file_atomically(path, lambda file: file.write_text(json.dumps(times, indent=2)))


def cached_faiss_index(path: Path, build):
    if path.is_file():
        return faiss.read_index(str(path))
    started = time.perf_counter()
    index = build()
    record_build_time(path.parent, path.stem, time.perf_counter() - started)
    faiss.write_index(index, str(path.with_name(f".{path.name}.tmp")))
    os.replace(path.with_name(f".{path.name}.tmp"), path)
    return index


def cached_matryoshka_index(path: Path, database: np.ndarray, **settings) -> MatryoshkaIndex:
    if path.is_dir():
        try:
            return MatryoshkaIndex.load(path)
        except ValueError as error:
            print(f"rebuilding {path.name}: {error}")
    started = time.perf_counter()
    index = MatryoshkaIndex(database, **settings)
    record_build_time(path.parent, path.name, time.perf_counter() - started)
    print(f"built {path.name} in {time.perf_counter() - started:.0f} s")
    index.save(path)
    return index


def build_full_hnsw(unit: np.ndarray, hnsw_m: int, ef_construction: int):
    index = faiss.IndexHNSWFlat(unit.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    started = time.perf_counter()
    index.add(unit)
    print(f"built full-dim HNSW in {time.perf_counter() - started:.0f} s", flush=True)
    return index


def auto_ivfpq(count: int, dim: int) -> str | None:
    if count < 10_000:  # 8-bit codes need 256 training points per sub-quantiser, the lists ~40 per list
        return None
    nlist = int(min(4096, max(16, 2 ** round(np.log2(np.sqrt(count))))))
    subquantizers = max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)
    return f"IVF{nlist},PQ{subquantizers}"


def build_ivfpq(unit: np.ndarray, factory: str, seed: int):
    """The full-dim IVF-PQ baseline: `factory` + an exact float re-rank (faiss "RFlat"), trained on a sample."""
    index = faiss.index_factory(unit.shape[1], f"{factory},RFlat", faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    sample = np.random.default_rng(seed).choice(len(unit), size=min(len(unit), 131072), replace=False)
    index.train(unit[np.sort(sample)])
    index.add(unit)
    print(f"built full-dim {factory} in {time.perf_counter() - started:.0f} s", flush=True)
    return index


def describe(row: dict) -> str:
    breadth = f" ef {row['ef_search']}" if "ef_search" in row else f" nprobe {row['nprobe']}" if "nprobe" in row else ""
    if row["method"].startswith("ivfpq"):
        return f"{row['factory']}{breadth} re-rank x{row['k_factor']}"
    storage = row.get("shortlist_storage", "float32")
    kind = row.get("shortlist_index") if storage == "float32" else f"{storage} {row['shortlist_index']}"
    if row["method"].startswith("funnel"):
        return f"{kind}{breadth} dims {row['funnel_dims']} sizes {row['funnel_sizes']}"
    if row["method"].startswith("adaptive"):
        return f"{kind} @{row['shortlist_dim']} x{row['shortlist_size']}{breadth} -> @{row['rerank_dim']}"
    return f"@{row['dim']}" + (f" ef {row['ef_search']}" if "ef_search" in row else "")


def print_table(rows: list[dict], exact_qps: float) -> None:
    print(f"\n{'method':<18} {'setting':<56} {'mAP@10':>7} {'recall@10':>9} {'nn_rec@10':>9} {'QPS':>9} "
          f"{'speed-up':>8} {'MFLOP/q':>8} {'B/vec':>6}")
    for row in rows:
        print(f"{row['method']:<18} {describe(row):<56} {100 * row['map@10']:7.2f} {100 * row['recall@10']:9.4f} "
              f"{100 * row['nn_recall@10']:9.2f} {row['qps']:9.0f} {row['qps'] / exact_qps:7.1f}x "
              f"{row['mflops_per_query']:8.3f} {row['bytes_per_vector']:6.0f}{'  *' if row['pareto'] else ''}")
    print("(* = on the QPS vs mAP@10 Pareto front)")


def fastest_at_equal_quality(rows: list[dict]) -> dict[str, dict]:
    """Each method's fastest row (by the sweep's QPS) within EQUAL_QUALITY of exact search's mAP@10."""
    floor = rows[0]["map@10"] - EQUAL_QUALITY
    best = {}
    for row in rows:
        if row["map@10"] >= floor and row["qps"] > best.get(row["method"], {"qps": 0})["qps"]:
            best[row["method"]] = row
    return best


def same_setting(rows: list[dict], method: str, chosen: dict) -> dict | None:
    """The Qdrant row of `method` that ran faiss's `chosen` setting (the engine's speed on the same plan), if any."""
    setting = [chosen.get(key) for key in SETTING_KEYS]
    return next((row for row in rows if row["method"] == f"{method} (qdrant)"
                 and [row.get(key) for key in SETTING_KEYS] == setting), None)


def summarise(best: dict[str, dict], times: dict[str, list[float]], num_queries: int, twins: dict[str, dict],
              found: dict[str, np.ndarray], relevance) -> dict:
    """Prints each method's fastest setting and the targets, from the side-by-side `times` of the chosen settings:
    each ratio is the median of the per-turn ratios. From the searches' ids (`found`) and `relevance`, also how
    Qdrant's mAP@10 on faiss's setting differs from faiss's, paired by query."""
    exact = best["exact (flat)"]
    qps = {method: num_queries / statistics.median(values) for method, values in times.items()}
    print(f"\nAt equal quality (mAP@10 >= {100 * (exact['map@10'] - EQUAL_QUALITY):.2f}, exact full-dim minus 0.5 "
          f"point), fastest setting per method; QPS in the sweep, then side by side ({len(times['exact (flat)'])} turns):")
    for method, row in best.items():
        paired = f"{qps[method]:9.0f}" if method in qps else " " * 9
        print(f"  {method:<18} {describe(row):<56} mAP@10 {100 * row['map@10']:.2f} +- "
              f"{100 * row['map@10_stderr']:.2f}  nn_recall@10 {100 * row['nn_recall@10']:5.1f}  "
              f"{row['qps']:9.0f} {paired} QPS")
    print(f"  (+- one standard error of mAP@10 over the {num_queries:,} queries: settings whose mAP@10 differ by less "
          f"are not told apart)")

    def speedup(method: str, baseline: str) -> float:  # QPS of `method` over `baseline`'s, turn by turn
        return paired_ratio(times[baseline], times[method]) if baseline in times else float("nan")

    summary = {"exact_map@10": exact["map@10"], "exact_qps": qps["exact (flat)"],
               "hnsw_best_qps": qps.get("hnsw (full dim)", float("nan")), "side_by_side_qps": qps,
               "side_by_side_seconds": times}
    ours = max((m for m in ("adaptive", "funnel") if m in times), key=qps.get, default=None)
    if ours is None:
        print("  no adaptive / funnel setting reaches equal quality")
        summary.update(target_vs_exact=False, target_vs_hnsw=False)
        return summary
    vs_exact, vs_hnsw = speedup(ours, "exact (flat)"), speedup(ours, "hnsw (full dim)")
    summary.update(ours_best=best[ours], speedup_vs_exact=vs_exact, speedup_vs_hnsw=vs_hnsw,
                   target_vs_exact=bool(vs_exact >= TARGET_VS_EXACT), target_vs_hnsw=bool(vs_hnsw >= TARGET_VS_HNSW))
    print(f"Targets (side by side, median of the per-turn ratios): ours ({ours}) {vs_exact:.1f}x exact (need >= "
          f"{TARGET_VS_EXACT:.0f}x: {'met' if summary['target_vs_exact'] else 'NOT met'}), {vs_hnsw:.2f}x the best "
          f"full-dim HNSW (need >= {TARGET_VS_HNSW}x: {'met' if summary['target_vs_hnsw'] else 'NOT met'})")
    for method in ("adaptive", "funnel"):
        if f"{method} (qdrant)" in times and method in times:
            ratio = speedup(f"{method} (qdrant)", method)
            summary[f"qdrant_{method}_vs_faiss"] = ratio
            print(f"Qdrant {method}: {ratio:.2f}x faiss's {method} QPS at equal quality (need >= "
                  f"{TARGET_QDRANT_VS_FAISS}x: {'met' if ratio >= TARGET_QDRANT_VS_FAISS else 'NOT met'})")
        if method in twins and method in times:
            twin = f"{method} (qdrant, faiss's setting)"
            ratio = speedup(twin, method)
            summary[f"qdrant_{method}_vs_faiss_same_setting"] = ratio
            print(f"  with faiss's setting (the engine's speed on the same plan): {ratio:.2f}x, mAP@10 "
                  f"{100 * twins[method]['map@10']:.2f}, nn_recall@10 {100 * twins[method]['nn_recall@10']:.1f}")
            if twin in found and method in found:
                difference, error = paired_map_difference(found[twin], found[method], relevance)
                summary[f"qdrant_{method}_same_setting_map_difference"] = [difference, error]
                print(f"  its mAP@10 minus faiss's on that setting, paired by query: {100 * difference:+.2f} +- "
                      f"{100 * error:.2f}")
    return summary


# -- running a chosen setting again ------------------------------------------------------------------------------


def remember(reruns: dict, rows: list[dict], key: str, open_index, make_search) -> None:
    """Notes how to run `rows`' searches again: `open_index()` (re)opens the index they share, named `key`, and
    `make_search(index, row)` gives the row's search of a query batch. Indexes are reopened from the cache rather
    than kept: a dozen 1M-vector indexes do not fit in memory together."""
    for row in rows:
        reruns[id(row)] = (key, open_index, make_search)


def faiss_search(index, row: dict):
    params = faiss.SearchParametersHNSW(efSearch=row["ef_search"]) if "ef_search" in row else None
    return lambda batch: index.search(batch / np.linalg.norm(batch, axis=1, keepdims=True), K, params=params)


def engine_search(index, row: dict):
    """An adaptive / funnel row's search, on the MatryoshkaIndex or the Qdrant collection that measured it."""
    if row["method"].endswith("(qdrant)"):
        breadth = {"ef_search": row["ef_search"]} if "ef_search" in row else {"exact_shortlist": True}
    else:
        breadth = {key: row[key] for key in ("ef_search", "nprobe") if key in row}
    if "funnel_dims" in row:
        return lambda batch: index.funnel_search(batch, K, row["funnel_dims"], row["funnel_sizes"], **breadth)
    return lambda batch: index.search(batch, K, row["shortlist_dim"], row["shortlist_size"], row["rerank_dim"], **breadth)


def side_by_side(chosen: dict[str, dict], reruns: dict, queries: np.ndarray, rounds: int,
                 seconds: float) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per run of all `queries` of each chosen row's search, the searches taking turns `rounds` times, each
    turn repeating the run to last about `seconds`; and the ids each adaptive / funnel search returns (for
    `paired_map_difference`)."""
    indexes, runs, passes, found = {}, {}, {}, {}
    for method, row in chosen.items():
        key, open_index, make_search = reruns[id(row)]
        if key not in indexes:
            indexes[key] = open_index()
        search = make_search(indexes[key], row)
        if method.startswith(("adaptive", "funnel")):
            found[method] = search(queries)[1]
        passes[method] = max(1, round(seconds * row["qps"] / len(queries)))
        runs[method] = partial(lambda search, count: [search(queries) for _ in range(count)], search, passes[method])
    print(f"timing {', '.join(runs)} side by side, {rounds} turns of ~{seconds:g} s", flush=True)
    times = {method: [t / passes[method] for t in values] for method, values in interleaved_times(runs, rounds).items()}
    for index in indexes.values():
        if isinstance(index, QdrantMatryoshkaIndex):
            index.close()
    return times, found


def paired_map_difference(ids: np.ndarray, other_ids: np.ndarray, relevance) -> tuple[float, float]:
    """mAP@10 of `ids` minus that of `other_ids` (the same queries) and its standard error, paired by query: the
    two searches' shared per-query spread cancels, so a real quality difference between engines on the same setting
    shows where two unpaired standard errors would hide it."""
    difference = average_precisions_at_k(*relevance(ids), K) - average_precisions_at_k(*relevance(other_ids), K)
    return float(difference.mean()), standard_error(difference)


def unit_rows(database: np.ndarray) -> np.ndarray:
    return database / np.linalg.norm(database, axis=1, keepdims=True)


def flat_index(unit: np.ndarray):
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    return index


def baseline_rows(args, database: np.ndarray, queries: np.ndarray, relevance, cache: Path, reruns: dict):
    """Exact full-dim search (also the ground truth of nn_recall) and full-dim HNSW at each efSearch."""
    unit = unit_rows(database)
    exact = flat_index(unit)
    exact_row, exact_ids = evaluate_faiss_index(exact, queries, relevance, method="exact (flat)", k=K)
    exact_row["nn_recall@10"] = 1.0
    remember(reruns, [exact_row], "exact", lambda: flat_index(unit_rows(database)), faiss_search)
    del exact
    print(f"exact full-dim: mAP@10 {100 * exact_row['map@10']:.2f}, {exact_row['qps']:.0f} QPS", flush=True)
    rows = [exact_row]
    hnsw_path = cache / f"hnsw_full_m{args.hnsw_m}_efc{args.ef_construction}.faiss"
    hnsw = cached_faiss_index(hnsw_path, lambda: build_full_hnsw(unit, args.hnsw_m, args.ef_construction))
    for ef in int_list(args.hnsw_ef):
        params = faiss.SearchParametersHNSW(efSearch=ef)
        rows.append(evaluate_faiss_index(hnsw, queries, relevance, method="hnsw (full dim)", k=K, params=params,
                                         exact_ids=exact_ids, repeats=args.repeats)[0])
    remember(reruns, rows[1:], hnsw_path.name, partial(faiss.read_index, str(hnsw_path)), faiss_search)
    factory = auto_ivfpq(*unit.shape) if args.ivfpq == "auto" else args.ivfpq or None
    if args.ivfpq and factory is None:
        print(f"no IVF-PQ baseline: {len(unit)} vectors are too few for --ivfpq auto (give a factory string)")
    if factory is not None:
        name = factory.replace(",", "_")
        ivfpq = cached_faiss_index(cache / f"ivfpq_{name}_s{args.seed}.faiss", lambda: build_ivfpq(unit, factory, args.seed))
        for nprobe in int_list(args.ivfpq_nprobe):
            params = faiss.IndexRefineSearchParameters(k_factor=args.ivfpq_k_factor,
                                                       base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
            row = evaluate_faiss_index(ivfpq, queries, relevance, method="ivfpq (full dim)", k=K, params=params,
                                       exact_ids=exact_ids, repeats=args.repeats)[0]
            rows.append({**row, "factory": factory, "nprobe": nprobe, "k_factor": args.ivfpq_k_factor})
    return rows, exact_ids


def matryoshka_rows(args, database: np.ndarray, queries: np.ndarray, relevance, cache: Path, exact_ids,
                    reruns: dict) -> list[dict]:
    """Adaptive search (low-dim IVF / HNSW shortlists, full-dim re-rank), funnels, binary shortlists."""
    dim = database.shape[1]
    shortlist_dims = int_list(args.shortlist_dims)
    rows = []
    for spec in filter(None, args.shortlist_indexes.split(",")):
        kind, _, storage = spec.partition(":")  # "hnsw:int8": an HNSW shortlist over int8 codes
        kind, _, cluster_dim = kind.partition("@")  # "ivf@16": IVF lists clustered at 16 dims (AdANNS-IVF)
        storage = storage or "float32"
        if kind == "hnsw":
            params, settings = graph_params(args), graph_settings(args)
        else:
            params = {} if args.nlist is None else {"nlist": args.nlist}
            params.update({"cluster_dim": int(cluster_dim)} if cluster_dim else {})
            settings = [{"nprobe": nprobe} for nprobe in int_list(args.nprobe)]
        name = "_".join([f"index_{kind}", "-".join(map(str, shortlist_dims)), *(f"{k}{v}" for k, v in params.items())])
        name += "" if storage == "float32" else f"_{storage}"
        open_index = partial(cached_matryoshka_index, cache / name, database, shortlist_index=kind,
                             shortlist_dim=shortlist_dims, index_params=params, shortlist_storage=storage)
        index, first = open_index(), len(rows)
        for setting in settings:
            rows += sweep_index(index, queries, relevance, k=K, shortlist_sizes=int_list(args.shortlist_sizes),
                                rerank_dims=int_list(args.rerank_dims, dim), exact_ids=exact_ids,
                                repeats=args.repeats, **setting)
        for funnel in filter(None, args.funnels.split(";")):
            dims_text, sizes_text = funnel.split(":")
            try:
                rows.append(evaluate_funnel(index, queries, relevance, int_list(dims_text, dim), int_list(sizes_text),
                                            k=K, exact_ids=exact_ids, repeats=args.repeats, **settings[0]))
            except ValueError as error:
                print(f"skipping funnel {funnel!r} for dim {dim}: {error}")
        remember(reruns, rows[first:], name, open_index, engine_search)
    binary_dims = [d for d in int_list(args.binary_dims, dim) if d <= dim]
    if binary_dims:
        kind = args.binary_shortlist_index
        params = graph_params(args) if kind == "hnsw" else {}
        name = "_".join([f"index_binary_{'-'.join(map(str, binary_dims))}", *([kind] if params else []),
                         *(f"{k}{v}" for k, v in params.items())])
        open_index = partial(cached_matryoshka_index, cache / name, database, shortlist_storage="binary",
                             shortlist_dim=binary_dims, shortlist_index=kind, index_params=params)
        index, first = open_index(), len(rows)
        for setting in binary_settings(args):
            rows += sweep_index(index, queries, relevance, k=K, shortlist_sizes=binary_shortlist_sizes(args),
                                exact_ids=exact_ids, repeats=args.repeats, **setting)
        remember(reruns, rows[first:], name, open_index, engine_search)
    return rows


def binary_shortlist_sizes(args) -> list[int]:
    return int_list(args.shortlist_sizes) if args.binary_shortlist_index == "hnsw" else [50, 200, 800]


def binary_settings(args) -> list[dict]:
    return graph_settings(args) if args.binary_shortlist_index == "hnsw" else [{}]


def graph_params(args) -> dict:
    """Build parameters of the HNSW shortlist graphs (MatryoshkaIndex's `index_params`)."""
    return {"hnsw_m": args.shortlist_m, "ef_construction": args.ef_construction}


def graph_settings(args) -> list[dict]:
    """Search settings swept on each HNSW shortlist graph."""
    return [{"ef_search": ef} for ef in int_list(args.ef_search)]


def qdrant_row(index: QdrantMatryoshkaIndex, queries, relevance, exact_ids, repeats: int, funnel=None,
               setting=(None, None, None), ef_search: int | None = None) -> dict:
    """One search setting on the Qdrant collection, measured like the faiss index's rows: an adaptive setting
    (shortlist_dim, size, rerank_dim) or a funnel (dims, sizes); `ef_search=None` means an exact shortlist.
    MFLOPs per query are counted for exact shortlists only (the engine reports no HNSW distance counts). As on
    the faiss index, the HNSW breadth is raised to the shortlist size."""
    first_size = funnel[1][0] if funnel is not None else setting[1]
    if ef_search is not None:
        ef_search = max(ef_search, first_size)
    search_kwargs = {"exact_shortlist": True} if ef_search is None else {"ef_search": ef_search}
    if funnel is not None:
        dims, sizes = funnel
        search = lambda batch: index.funnel_search(batch, K, dims, sizes, **search_kwargs)  # noqa: E731
        row = {"method": "funnel (qdrant)", "shortlist_dim": dims[0], "shortlist_size": sizes[0],
               "rerank_dim": dims[-1], "funnel_dims": dims, "funnel_sizes": sizes}
        stages = list(zip(sizes[:-1], dims[1:], strict=True))
    else:
        shortlist_dim, size, rerank_dim = setting
        search = lambda batch: index.search(batch, K, shortlist_dim, size, rerank_dim, **search_kwargs)  # noqa: E731
        row = {"method": "adaptive (qdrant)", "shortlist_dim": shortlist_dim, "shortlist_size": size,
               "rerank_dim": rerank_dim}
        stages = [(size, rerank_dim)]
    _, ids, qps, _ = timed_search(search, queries, repeats)
    count = len(index)
    row.update(shortlist_index="exact" if ef_search is None else "hnsw",
               shortlist_storage=index.shortlist_quantization or "float32", storage="float32")
    if ef_search is not None:
        row["ef_search"] = ef_search
    row.update(score_results(ids, relevance, K, exact_ids))
    row["qps"] = qps
    row["mflops_per_query"] = (count * row["shortlist_dim"] + sum(s * d for s, d in stages)) / 1e6 if ef_search is None else float("nan")
    quantized = {"binary": 1 / 8, "int8": 1}.get(index.shortlist_quantization, 0)
    row["bytes_per_vector"] = 4 * sum(index.stored_dims) + quantized * sum(index.shortlist_dims)
    return row


def cached_qdrant_index(args, database: np.ndarray, cache: Path, name: str, **settings) -> QdrantMatryoshkaIndex:
    """The collection `name` under `cache`/qdrant (or on --qdrant_url): opened when complete with these settings,
    else built (an interrupted build resumes)."""
    # The embedded engine searches with --threads, as faiss does (a server keeps its own setting).
    where = {"url": args.qdrant_url} if args.qdrant_url else {"path": cache / "qdrant", "max_search_threads": args.threads}
    try:
        index = QdrantMatryoshkaIndex.open(name, **where)
        same_hnsw = dict(index.hnsw_config, **settings["hnsw_config"]) == index.hnsw_config
        if len(index) == len(database) and index.shortlist_dims == settings["shortlist_dim"] and same_hnsw:
            return index
        index.close()
    except ValueError:
        pass
    started = time.perf_counter()
    index = QdrantMatryoshkaIndex(database, collection_name=name, **settings, **where)
    record_build_time(cache, f"qdrant_{name}", time.perf_counter() - started)
    print(f"built qdrant collection {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return index


def qdrant_rows(args, database: np.ndarray, queries: np.ndarray, relevance, cache: Path, exact_ids,
                reruns: dict) -> list[dict]:
    """The adaptive and funnel settings of `matryoshka_rows` on Qdrant collections: HNSW and exact shortlists,
    plus binary-quantised shortlists at --binary_dims."""
    dim = database.shape[1]
    shortlist_dims, rerank_dims = int_list(args.shortlist_dims), int_list(args.rerank_dims, dim)
    funnels = [tuple(int_list(part, dim) for part in funnel.split(":")) for funnel in filter(None, args.funnels.split(";"))]
    funnels = [(dims, sizes) for dims, sizes in funnels if dims[0] in shortlist_dims]
    stored = sorted((set(rerank_dims) | {d for dims, _ in funnels for d in dims}) - set(shortlist_dims))
    # full_scan_threshold=1: always search the graph, as the faiss HNSW shortlists do (Qdrant's default scans
    # vectors under 10 MB per segment in full).
    hnsw = {"m": args.shortlist_m, "ef_construct": args.ef_construction, "full_scan_threshold": 1}
    rows = []
    for storage in args.qdrant_shortlist_storages.split(","):
        quantization = None if storage == "float32" else storage
        name = "_".join(["hnsw", "-".join(map(str, shortlist_dims)), "rerank", "-".join(map(str, stored)),
                         f"m{args.shortlist_m}", f"efc{args.ef_construction}", "fs1", *([storage] if quantization else [])])
        open_index = partial(cached_qdrant_index, args, database, cache, name, shortlist_dim=shortlist_dims,
                             rerank_dim=stored or None, hnsw_config=hnsw, shortlist_quantization=quantization)
        index, first = open_index(), len(rows)
        exact = [None] if args.qdrant_exact_shortlists and quantization is None else []
        for ef_search in [*int_list(args.ef_search), *exact]:
            grid = [(d, size, r) for d in shortlist_dims for size in int_list(args.shortlist_sizes) for r in rerank_dims
                    if size >= K]
            rows += [qdrant_row(index, queries, relevance, exact_ids, args.repeats, setting=setting, ef_search=ef_search)
                     for setting in grid]
            rows += [qdrant_row(index, queries, relevance, exact_ids, args.repeats, funnel=funnel, ef_search=ef_search)
                     for funnel in funnels]
        index.close()
        remember(reruns, rows[first:], f"qdrant {name}", open_index, engine_search)
    binary_dims = [d for d in int_list(args.binary_dims if args.qdrant_binary_dims is None else args.qdrant_binary_dims, dim)
                   if d <= dim]
    if binary_dims:
        name = f"binary_{'-'.join(map(str, binary_dims))}_m{args.shortlist_m}_efc{args.ef_construction}_fs1"
        open_index = partial(cached_qdrant_index, args, database, cache, name, shortlist_dim=binary_dims,
                             shortlist_quantization="binary", hnsw_config=hnsw)
        binary = open_index()
        # Qdrant's quantised shortlists always search a graph: the faiss index's sizes, each ef_search.
        efs = [setting.get("ef_search", int_list(args.ef_search)[0]) for setting in binary_settings(args)]
        binary_rows = [qdrant_row(binary, queries, relevance, exact_ids, args.repeats, setting=(d, size, dim), ef_search=ef)
                       for ef in efs for d in binary_dims for size in binary_shortlist_sizes(args) if size >= K]
        binary.close()
        remember(reruns, binary_rows, f"qdrant {name}", open_index, engine_search)
        rows += binary_rows
    return rows


def main() -> None:
    args = parse_args()
    threadpool_limits(args.threads)
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    if args.embeddings is not None:
        database_file, model_name = args.embeddings, f"embeddings from {args.embeddings}"
    else:
        if args.model is None:
            raise SystemExit("Pass --model (a saved hf_mrl model folder, random-vit or minilm) or --embeddings.")
        fingerprint = load_model(args.model, args.data)[3]
        name = f"{args.data}-{fingerprint}-n{args.num_items or 'all'}-c{args.copies}-q{args.num_queries}-s{args.seed}"
        name += "-bf16" if args.bf16 else ""
        database_file, model_name = args.out / "cache" / name / "database.npy", f"{args.model} ({fingerprint})"
        if not database_file.is_file():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                build_database(args, database_file.parent)
    database, queries, relevance = load_database(database_file)
    count, dim = database.shape
    print(f"database: {count:,} x {dim} from {model_name}; {len(queries)} queries; {args.threads} thread(s)")

    reruns = {}  # id(row) -> how to run its search again
    rows, exact_ids = baseline_rows(args, database, queries, relevance, database_file.parent, reruns)
    rows += matryoshka_rows(args, database, queries, relevance, database_file.parent, exact_ids, reruns)
    if args.backend == "qdrant":
        rows += qdrant_rows(args, database, queries, relevance, database_file.parent, exact_ids, reruns)
    mark_pareto_front(rows)
    print_table(rows, rows[0]["qps"])
    best = fastest_at_equal_quality(rows)
    chosen = {m: best[m] for m in PAIRED_METHODS if m in best}
    twins = {m: same_setting(rows, m, best[m]) for m in ("adaptive", "funnel") if m in best}
    twins = {m: row for m, row in twins.items() if row is not None}
    # (timed once when the engine's own fastest setting at equal quality is faiss's)
    chosen.update({f"{m} (qdrant, faiss's setting)": row for m, row in twins.items() if row is not chosen.get(f"{m} (qdrant)")})
    times, found = side_by_side(chosen, reruns, queries, args.paired_rounds, args.paired_seconds)
    for method in twins:  # a twin that is the engine's own choice was timed once: report it under both names
        twin, own = f"{method} (qdrant, faiss's setting)", f"{method} (qdrant)"
        if twin not in times and own in times:
            times[twin], found[twin] = times[own], found[own]
    summary = summarise(best, times, len(queries), twins, found, relevance)
    build_file = database_file.parent / BUILD_TIMES
    build_seconds = json.loads(build_file.read_text()) if build_file.is_file() else {}
    print("\nBuild times (s, wall clock, when first built; faiss with --threads at that run, Qdrant with its own pool):")
    for name, seconds in build_seconds.items():
        print(f"  {name:<60} {seconds:8.1f}")
    summary["build_seconds"] = build_seconds
    result = {
        "model": model_name, "data": args.data, "backend": args.backend, "database_size": count, "dim": dim, "num_queries": len(queries),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "threads": args.threads,
        "command": " ".join(["python", *sys.argv]), "paired_rounds": args.paired_rounds,
        "paired_seconds": args.paired_seconds, "summary": summary,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_sweep(rows, plot_path=args.out / "retrieval.png", quality_floor=rows[0]["map@10"] - EQUAL_QUALITY,
               title=f"{args.data}: {count:,} x {dim} embeddings, {len(queries)} queries, {args.threads} thread(s)")
    with open(args.out / ".retrieval.json.tmp", "w") as handle:
        json.dump(result, handle, indent=2, default=float)
    os.replace(args.out / ".retrieval.json.tmp", args.out / "retrieval.json")
    print(f"saved {args.out / 'retrieval.json'} and {args.out / 'retrieval.png'}")


if __name__ == "__main__":
    main()
