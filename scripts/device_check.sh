#!/usr/bin/env bash
# One command to check the kernels on an accelerator: the kernel tests (`pytest -m kernels`: nested heads,
# fused cross-entropy, contrastive loss, bf16 autocast included) with HF_MRL_TEST_DEVICE=<device>, then the
# three benches with --device <device>, then MatryoshkaTrainer with the TrainingArguments that need a GPU
# (fp16, tf32, torch_compile, FSDP, DeepSpeed; scripts/check_trainer_device.py), then ONE summary table.
#
#   bash scripts/device_check.sh                     # CUDA, the benches at their README sizes (a few minutes)
#   bash scripts/device_check.sh --device cpu        # dry run on the CPU, smaller benches (a few minutes)
#   bash scripts/device_check.sh --device cpu --quick  # tiny benches: checks the script itself (~1 minute)
#   bash scripts/device_check.sh --log-dir "$OUT"    # keep every step's full output there
#
# Needs a CUDA build of torch for --device cuda (scripts/setup.sh installs the CPU one). Exits non-zero
# when any step fails; the table still lists every step.
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda
quick=0
log_dir=""
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:-}"; shift 2 || { usage; exit 2; } ;;
    --device=*) device="${1#*=}"; shift ;;
    --quick) quick=1; shift ;;
    --log-dir) log_dir="${2:-}"; shift 2 || { usage; exit 2; } ;;
    --log-dir=*) log_dir="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$device" in
  cpu|cuda|cuda:[0-9]*) ;;
  *) echo "device_check.sh: --device must be cpu, cuda or cuda:N, got '$device'" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python}"
log_dir="${log_dir:-$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")}"
mkdir -p "$log_dir"

# Bench sizes: the README's on CUDA (seconds there); on the CPU the same but 10,000 labels and 400 texts at most;
# tiny with --quick.
if [ "$quick" = 1 ]; then
  sizes="quick"
  heads_args=(--batch 16 --dim 64 --labels 100 --repeats 1)
  contrastive_args=(--batch 64 --dim 256 --repeats 1)
  eval_args=(--num-texts 64 --batch-size 32)
elif [ "${device%%:*}" = cuda ]; then
  sizes="full"
  heads_args=(--batch 256 --dim 2048 --labels 1000 100000 --repeats 5)
  contrastive_args=(--batch 4096 --dim 1024 --repeats 5)
  eval_args=(--num-texts 2000 --batch-size 128 --repeats 3)
else
  sizes="cpu"
  heads_args=(--batch 256 --dim 2048 --labels 1000 10000 --repeats 3)
  contrastive_args=(--batch 4096 --dim 1024 --repeats 3)
  eval_args=(--num-texts 400 --batch-size 128)
fi

rows=()
failed=0
# run NAME COMMAND...: streams the output, keeps it in $log_dir/NAME.log, records status and seconds.
run() {
  local name="$1"; shift
  local start=$SECONDS status
  echo "== $name: $*"
  "$@" 2>&1 | tee "$log_dir/$name.log"
  status=${PIPESTATUS[0]}
  seconds=$((SECONDS - start))
  if [ "$status" = 0 ]; then result=ok; else result="FAILED (exit $status)"; failed=1; fi
}

run tests env HF_MRL_TEST_DEVICE="$device" "$PYTHON" -m pytest -q -m kernels tests
counts=$(grep -E '^[0-9]+ (passed|failed|error)|^=+ .*(passed|failed|error)' "$log_dir/tests.log" | tail -n 1 | tr -d '=')
rows+=("| pytest -m kernels | $result | ${counts:-no summary line} | $seconds |")

run bench_heads "$PYTHON" scripts/bench_heads.py --with-loss --device "$device" "${heads_args[@]}"
# One row per label count: the fused nested heads + cross-entropy against one nn.Linear + cross-entropy.
while IFS= read -r line; do
  rows+=("$line")
done < <(awk -v result="$result" -v seconds="$seconds" '
  /^batch .* labels/ { labels = $5 }
  /^MRL-E fused / { efficient = $4 " time, " $6 " memory" }
  /^MRL fused / {
    printf "| bench_heads --with-loss, %s labels | %s | vs one nn.Linear + CE: MRL-E %s; MRL %s time, %s memory | %s |\n",
      labels, result, efficient, $4, $6, seconds
  }' "$log_dir/bench_heads.log")
grep -q '^MRL fused ' "$log_dir/bench_heads.log" || rows+=("| bench_heads --with-loss | $result | no ratios printed | $seconds |")

run bench_contrastive_loss "$PYTHON" scripts/bench_contrastive_loss.py --device "$device" "${contrastive_args[@]}"
fused=$(awk '/ratio \(a\)\/\(b\)/ { print $4 }' "$log_dir/bench_contrastive_loss.log")
naive=$(awk '/ratio \(c\)\/\(b\)/ { print $4 }' "$log_dir/bench_contrastive_loss.log")
rows+=("| bench_contrastive_loss | $result | vs one CLIP loss: Matryoshka ${fused:-?}x (target <= 1.3), naive per-dim loop ${naive:-?}x | $seconds |")

run bench_eval "$PYTHON" scripts/bench_eval.py --device "$device" "${eval_args[@]}"
nine=$(awk '/^nine dims \/ one dim =/ { print $7 }' "$log_dir/bench_eval.log")
reencode=$(awk '/^per-dim re-encoding \/ nine dims/ { print $NF }' "$log_dir/bench_eval.log")
rows+=("| bench_eval | $result | nine dims in one pass ${nine:-?}x one dim (target <= 1.2); re-encoding per dim ${reencode:-?} the one pass | $seconds |")

run trainer "$PYTHON" scripts/check_trainer_device.py --device "${device%%:*}"
passed=$(grep -c '| ok |' "$log_dir/trainer.log")
failures=$(grep -c '| FAILED' "$log_dir/trainer.log")
rows+=("| check_trainer_device | $result | $passed flag checks ok, $failures failed | $seconds |")

echo
echo "device_check: --device $device, $sizes sizes, full logs in $log_dir"
echo "| step | result | headline | seconds |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
