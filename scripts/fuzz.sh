#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang-14, ASan + UBSan, in
# build-fuzz) and runs each on a seed corpus made from real files: configs,
# the .npy fixtures, and a model directory, tokenizer and token shards that
# the memoe CLI writes here and now. Exits non-zero on any finding (crash,
# sanitizer report, exception other than memoe::Error, timeout, OOM); the
# crashing input is kept in build-fuzz/findings/TARGET/.
#
#   scripts/fuzz.sh                 each target for 1M executions (at most FUZZ_TIME s, default 900)
#   scripts/fuzz.sh --smoke         each target for 20k executions (at most 25 s): CI
#   scripts/fuzz.sh npy_fuzz ...    only these targets
# FUZZ_RUNS / FUZZ_TIME override the counts; JOBS the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-1000000}
seed=()
fresh=0
time_limit=${FUZZ_TIME:-900}
targets=()
for arg in "$@"; do
  case "$arg" in
    # The smoke is CI's: a fixed seed and a fresh corpus, so a run on the same
    # tree repeats itself; finding new bugs is the long runs' job.
    --smoke) runs=${FUZZ_RUNS:-20000}; time_limit=${FUZZ_TIME:-25}; seed=(-seed=1); fresh=1 ;;
    -*) echo "usage: $0 [--smoke] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done
all_targets=(config_fuzz npy_fuzz safetensors_fuzz token_shards_fuzz tokenizer_fuzz model_dir_fuzz)
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

build=build-fuzz
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "== fuzz build ($build, clang++-14)"
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMEMOE_FUZZ=ON "${launcher[@]}" >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target memoe "${targets[@]}"

export OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# ---- seed corpus from real artefacts (regenerated each run)
seeds=$build/fuzz-seeds
work=$build/fuzz-work
rm -rf "$seeds" "$work"
mkdir -p "$work"
for t in "${all_targets[@]}"; do mkdir -p "$seeds/$t"; done
memoe() { ASAN_OPTIONS=detect_leaks=0 "$build/memoe" "$@" >/dev/null; }
# "@@file:NAME\n" CONTENT "\n" per file: the multi-file input of fuzz/fuzz_util.h.
pack() {
  local out=$1 dir=$2 name
  shift 2
  for name in "$@"; do printf '@@file:%s\n' "$name"; cat "$dir/$name"; printf '\n'; done >"$out"
}

# Two models small enough to fuzz quickly (MLA + MoE + Engram; GQA, dense;
# configs/tiny.json would make 100 KB inputs, 10x slower to run).
cat >"$work/micro_mla.json" <<'JSON'
{"vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 8, "first_k_dense_replace": 1,
 "moe_intermediate_size": 4, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
 "n_group": 2, "topk_group": 1, "scoring_func": "sigmoid", "attention": "mla", "num_attention_heads": 1,
 "q_lora_rank": 4, "kv_lora_rank": 4, "qk_nope_head_dim": 2, "qk_rope_head_dim": 2, "v_head_dim": 2,
 "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32,
                  "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
 "engram": {"layer_ids": [1], "max_ngram_size": 3, "table_sizes": [5, 7], "n_embed_per_ngram": 4,
            "n_head_per_ngram": 2, "kernel_size": 2, "seed": 3, "pad_id": 0, "table_lr_mult": 5.0}}
JSON
cat >"$work/micro_gqa.json" <<'JSON'
{"vocab_size": 12, "hidden_size": 8, "num_hidden_layers": 1, "intermediate_size": 8, "first_k_dense_replace": 1,
 "attention": "gqa", "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
 "tie_word_embeddings": true, "rope_scaling": null, "engram": null}
JSON
for c in micro_mla micro_gqa; do
  memoe init "$work/$c.json" --out "$work/$c"
  pack "$seeds/model_dir_fuzz/$c" "$work/$c" config.json model.safetensors
  cp "$work/$c/model.safetensors" "$seeds/safetensors_fuzz/$c.safetensors"
  cp "$work/$c/config.json" "$seeds/config_fuzz/$c.json"
done
memoe init "$work/micro_mla.json" --out "$work/micro_bf16" --dtype bf16
cp "$work/micro_bf16/model.safetensors" "$seeds/safetensors_fuzz/micro_bf16.safetensors"
for f in configs/*.json tests/fixtures/*/config.json; do cp "$f" "$seeds/config_fuzz/$(echo "$f" | tr / _)"; done
for f in tests/fixtures/*/*.npy; do cp "$f" "$seeds/npy_fuzz/$(echo "$f" | tr / _)"; done

# A tokenizer trained on this repository's documentation, and token shards
# (several per split) of part of it.
cat README.md DEVELOPERS.md >"$work/docs.txt"
memoe tokenizer train --input "$work/docs.txt" --vocab 400 --out "$work/tok"
cp "$work/tok/tokenizer.model" "$seeds/tokenizer_fuzz/tokenizer.model"
head -c 3000 README.md >"$work/part.txt"
memoe prepare --input "$work/part.txt" --tokenizer "$work/tok" --out "$work/data" --val-fraction 0.3 --shard-tokens 300
(cd "$work/data" && ls) >"$work/data.list"
pack "$seeds/token_shards_fuzz/data" "$work/data" meta.json $(grep -v '^meta.json$' "$work/data.list")

# ---- run
status=0
summary=()
for t in "${targets[@]}"; do
  corpus=$build/fuzz-corpus/$t
  findings=$build/findings/$t
  mkdir -p "$corpus" "$findings"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  echo "== $t: $runs runs, at most ${time_limit}s"
  log=$work/$t.log
  rc=0
  [ "$fresh" = 1 ] && rm -rf "$corpus" && mkdir -p "$corpus"
  "$build/$t" "${dict[@]}" "${seed[@]}" -runs="$runs" -max_total_time="$time_limit" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" "$seeds/$t" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  if [ "$rc" != 0 ]; then
    status=1
    tail -n 60 "$log"
    summary+=("$t: FINDING (exit $rc) after ${execs:-?} executions, input in $findings/")
  else
    summary+=("$t: ${execs:-?} executions, no finding   [$done_line]")
  fi
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$status"
