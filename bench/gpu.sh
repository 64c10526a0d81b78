#!/usr/bin/env bash
# The one-call GPU check (docs/gpu.md): on a fresh GPU machine with this repository (and
# Multi30k), install, run the CUDA-marked tests, then measure, and end with one table:
#   training target tokens/s, MFU and peak GPU memory of transformer-base and -big (bf16,
#   then with --compile where time allows), Multi30k trained for a few minutes to a test
#   BLEU, and decoding sentences/s of that model at beam 5 and greedy.
# Each part has its own time cap; a failing part is reported (with its last lines) and the
# script goes on; the whole stays within GPU_CHECK_BUDGET seconds (480). Everything printed
# also goes to $OUT/gpu-check.log when OUT is set.
#
#   bench/gpu.sh             on a GPU machine (make gpu-check)
#   bench/gpu.sh --dry-run   the same parts on the CPU, tiny sizes, this checkout's .venv
#
# Environment: GPU_CHECK_BUDGET (s, 480), GPU_CHECK_SECONDS (timed s a speed row, 45),
# GPU_CHECK_M30K_TIME (Multi30k training, 100s), GPU_CHECK_MAX_TOKENS (16384),
# GPU_CHECK_WORK (scratch directory), MTKIT_MULTI30K (Multi30k's .gz files),
# GPU_CHECK_OFFLINE=1 (install nothing: use python3 as it is, as when PyPI cannot be reached),
# GPU_CHECK_FAIL (a part's name: it fails on purpose; the test of the dry run uses it).
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
SELF=$REPO/bench/gpu.sh
DRY=0
PART=()  # --run-part FUNCTION ARGS...: one part, in its own process (under `timeout`)
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --run-part) shift; PART=("$@"); break ;;
        *) echo "usage: bench/gpu.sh [--dry-run]" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "${OUT:-}" ] && [ ${#PART[@]} = 0 ]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu-check.log") 2>&1
fi

START=$(date +%s)
if [ $DRY = 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-300}; else BUDGET=${GPU_CHECK_BUDGET:-480}; fi
DEADLINE=$((START + BUDGET))
MIN_PART=10  # seconds: a part that would get less is skipped
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mtkit-gpu-check.XXXXXX")}
mkdir -p "$WORK"
export GPU_CHECK_WORK=$WORK
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

for dir in "${MTKIT_MULTI30K:-}" "$REPO/../shared/data/multi30k" "$REPO/shared/data/multi30k" \
    "$REPO/.multi30k"; do
    if [ -n "$dir" ] && [ -e "$dir/train.de.gz" ]; then MULTI30K=$(cd "$dir" && pwd); break; fi
done
export MTKIT_MULTI30K=${MULTI30K:-${MTKIT_MULTI30K:-$REPO/../shared/data/multi30k}}

ROWS=()  # "part<TAB>status<TAB>result"
FAILED=0

# part NAME CAP COMMAND...: run COMMAND under `timeout` (at most CAP s, and no later than the
# deadline); its "RESULT: ..." lines become the table's rows for NAME.
part() {
    local name=$1 cap=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    if ((left < MIN_PART)); then
        ROWS+=("$name"$'\t'"skipped"$'\t'"no time left (${left} s of the ${BUDGET} s budget)")
        echo "== $name: skipped, ${left} s left"
        return
    fi
    ((cap > left)) && cap=$left
    set -- "$SELF" $([ $DRY = 1 ] && echo --dry-run) --run-part "$@"
    if [ "${GPU_CHECK_FAIL:-}" = "$name" ]; then
        set -- sh -c 'echo "$0: failing on purpose (GPU_CHECK_FAIL)"; exit 3' "$name"
    fi
    local log="$WORK/${name// /_}.log" began=$(date +%s)
    echo "== $name (at most ${cap} s)"
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]} status
    local took=$(($(date +%s) - began))
    case $rc in
        0) status="ok (${took} s)" ;;
        124 | 137) status="TIMEOUT (${cap} s)" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    if [ "$rc" != 0 ]; then
        FAILED=$((FAILED + 1))
        echo "-- $name: $status; its last lines:"
        grep -v '^RESULT: ' "$log" | tail -n 15 | sed 's/^/   | /'
    fi
    local results
    results=$(grep '^RESULT: ' "$log" | sed 's/^RESULT: //')
    if [ -z "$results" ]; then
        results=$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-120 | sed 's/[[:space:]]*$//')
    fi
    while IFS= read -r line; do
        ROWS+=("$name"$'\t'"$status"$'\t'"$line")
    done <<<"$results"
}

# -- the parts ------------------------------------------------------------------------

# The Makefile's own install (make install: the default CUDA torch from PyPI where
# nvidia-smi answers); a machine that cannot reach PyPI uses the python3 that already
# holds torch, with this checkout on its path. The dry run prints what make would run.
install_part() {
    if [ $DRY = 1 ]; then
        echo "here make would run:"
        make -s -n -B install VENV="$WORK/venv" | sed 's/^/   /'
        echo "on a machine with nvidia-smi:"
        make -s -n -B install VENV="$WORK/venv" NVIDIA_SMI=nvidia-smi | sed 's/^/   /'
        local pip
        pip=$(make -s -n -B install VENV="$WORK/venv" | grep "pip install" | tail -n 1)
        echo "RESULT: dry run: kept .venv; would run: ${pip#"$WORK/venv/bin/"}"
        return
    fi
    if [ -z "${GPU_CHECK_OFFLINE:-}" ] && python3 -c \
        "import urllib.request as u; u.urlopen('https://pypi.org/simple/pip/', timeout=5)" \
        >/dev/null 2>&1; then
        make install || return
        echo "RESULT: make install: $("$REPO/.venv/bin/python" -c "$TORCH_INFO")"
        "$REPO/.venv/bin/python" -c "$NEEDS_CUDA"
        return
    fi
    echo "PyPI cannot be reached: using $(command -v python3) and this checkout as they are"
    # Wrappers, not links: a venv's python found through a link elsewhere loses its venv.
    local python3 path
    python3=$(python3 -c 'import sys; print(sys.executable)')
    path="export PYTHONPATH=\"$REPO\${PYTHONPATH:+:\$PYTHONPATH}\";"
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\n%s exec "%s" -m mtkit "$@"\n' "$path" "$python3" >"$WORK/bin/mtkit"
    printf '#!/bin/sh\n%s exec "%s" "$@"\n' "$path" "$python3" >"$WORK/bin/python"
    chmod +x "$WORK/bin/mtkit" "$WORK/bin/python"
    local missing
    missing=$(python3 -c "
import importlib.util as u
print(' '.join(m for m in ('torch', 'sentencepiece', 'sacrebleu', 'typer', 'rich', 'numpy',
      'pytest') if u.find_spec(m) is None))")
    echo "RESULT: offline: python3 as it is ($(python3 -c "$TORCH_INFO"))${missing:+; missing: $missing}"
    [ -z "$missing" ] && "$WORK/bin/python" -c "$NEEDS_CUDA"
}
# .venv from a CPU machine would be kept by make: say so rather than time every part out.
NEEDS_CUDA='import sys, torch; torch.cuda.is_available() or sys.exit("torch sees no CUDA GPU (a CPU build in .venv? remove .venv and run again)")'
TORCH_INFO='import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, " + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU seen"))'

tests_part() {
    "$PY" -m pytest tests/test_cuda.py -m cuda -p no:cacheprovider -rs 2>&1 | tee "$WORK/pytest.out"
    local rc=${PIPESTATUS[0]}
    echo "RESULT: $(grep -E '[0-9]+ (passed|failed|skipped|error)' "$WORK/pytest.out" | tail -n 1 |
        tr -d '=' | sed 's/^ *//')"
    return "$rc"
}

# Multi30k through the recipe, prepared and encoded once: `data` makes DATA and the BPE
# (the speed rows train on them), `multi30k` trains, averages, translates and scores.
recipe() {
    make -s -f recipes/multi30k.mk BIN="$BIN" PY="$PY" MULTI30K="$MTKIT_MULTI30K" HUB=no \
        DATA="$WORK/data" RUN="$WORK/run" "${RECIPE_ARGS[@]}" "$@"
}

data_part() {
    recipe bpe || return
    echo "RESULT: $(wc -l <"$WORK/data/train.de") training pairs and a" \
        "$(wc -l <"$WORK/data/spm/spm.vocab")-piece BPE in $WORK/data"
}

multi30k_part() {
    recipe score || return
    "$PY" - "$WORK/run" <<'EOF'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
train = [r for r in records if r["kind"] == "train"][-1]
bleu = next(line for line in (run / "bleu.txt").read_text().splitlines() if "BLEU" in line)
print(f"RESULT: test2016 BLEU {bleu.split(' = ')[1].split()[0]} after {train['step']} updates, "
      f"{train['epoch']} epochs, {train['elapsed']:.0f} s of training")
EOF
}

speed_part() {  # ARCH [--compile]
    "$PY" -m bench train_speed --arch "$1" --data "$WORK/data" --spm "$WORK/data/spm/spm.model" \
        --summary "${SPEED_ARGS[@]}" "${@:2}"
}

decode_part() {
    local model=$WORK/run/checkpoint_avg.pt
    [ -e "$model" ] || model=$(ls -t "$WORK"/run/checkpoint_*.pt 2>/dev/null | head -n 1)
    "$PY" -m bench translate_speed ${model:+--model "$model"} --no-int8 --no-memory --summary \
        "${DECODE_ARGS[@]}"
}

# -- what runs where ------------------------------------------------------------------

TINY=(--set d_model=32 --set n_heads=2 --set d_ff=64 --set enc_layers=1 --set dec_layers=1)
BIN=${GPU_CHECK_BIN:-$REPO/.venv/bin}
PY=$BIN/python
if [ $DRY = 1 ]; then
    SPEED_ARGS=(--device cpu --precision bf16 --seconds 1 --threads 1 --max-tokens 1000 "${TINY[@]}")
    DECODE_ARGS=(--device cpu --threads 1 --sentences 50 --cap 20)
    RECIPE_ARGS=(DEVICE=cpu LIMIT=3000 VOCAB=1000 "MODEL_ARGS=${TINY[*]}" MAX_TOKENS=2048
        MAX_UPDATES=10 MAX_TIME=20s VALID_EVERY=10 VALID_SENTENCES=10 AVERAGE_LAST=1 BEAM=1
        "TRANSLATE_ARGS=--threads 1 --max-len-a 0 --max-len-b 10")
    COMPILE_NOTE="dry run: TORCH_COMPILE_DISABLE=1, the flag's path without compiling"
else
    SECONDS_EACH=${GPU_CHECK_SECONDS:-45}
    SPEED_ARGS=(--device cuda --precision bf16 --seconds "$SECONDS_EACH" --threads 4
        --max-tokens "${GPU_CHECK_MAX_TOKENS:-16384}")
    DECODE_ARGS=(--device cuda --sentences 1000)
    RECIPE_ARGS=(DEVICE=cuda "MAX_TIME=${GPU_CHECK_M30K_TIME:-100s}")
    COMPILE_NOTE=""
fi

if [ ${#PART[@]} -gt 0 ]; then
    "${PART[@]}"
    exit
fi

echo "mtkit GPU check$([ $DRY = 1 ] && echo ' (dry run on the CPU)'): $(date -u '+%F %T') UTC," \
    "budget ${BUDGET} s, scratch $WORK, Multi30k $MTKIT_MULTI30K"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
part install 300 install_part
[ -x "$BIN/mtkit" ] || BIN=$WORK/bin  # the offline install's launcher
PY=$BIN/python
export GPU_CHECK_BIN=$BIN
part "cuda tests" 150 tests_part
part data 120 data_part
part "train transformer-base" 120 speed_part transformer-base
part "train transformer-big" 120 speed_part transformer-big
part multi30k 240 multi30k_part
part decode 120 decode_part
if [ -n "$COMPILE_NOTE" ]; then export TORCH_COMPILE_DISABLE=1; fi
part "train transformer-big --compile" 240 speed_part transformer-big --compile
part "train transformer-base --compile" 240 speed_part transformer-base --compile
unset TORCH_COMPILE_DISABLE

# -- the table ------------------------------------------------------------------------

echo
echo "== mtkit GPU check$([ $DRY = 1 ] && echo ' (DRY RUN: CPU, tiny sizes)'):" \
    "$(($(date +%s) - START)) s of ${BUDGET}; $("$PY" -c "$TORCH_INFO" 2>/dev/null)"
[ -n "$COMPILE_NOTE" ] && echo "   --compile rows: $COMPILE_NOTE"
printf '| %-32s | %-15s | %s |\n' part status result
printf '| %-32s | %-15s | %s |\n' "$(printf -- '-%.0s' {1..32})" "$(printf -- '-%.0s' {1..15})" ---
for row in "${ROWS[@]}"; do
    IFS=$'\t' read -r name status result <<<"$row"
    printf '| %-32s | %-15s | %s |\n' "$name" "$status" "${result//|//}"
done
echo "log: ${OUT:+$OUT/gpu-check.log, }scratch $WORK"
[ "$FAILED" = 0 ]
