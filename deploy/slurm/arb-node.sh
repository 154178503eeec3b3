#!/usr/bin/env bash
# One node of deploy/slurm/arb.sbatch's allocation, started by its `srun` (one task per node): Ollama on loopback
# with the grid's models pulled (or, with ARB_ENGINE=vllm, vLLM serving one model), then Ray (the head on SLURM_NODEID 0, a worker elsewhere) with this node's
# resources and labels. Runs until SIGTERM (the batch script signals this step when it ends; `scancel` and a time
# limit signal every task), then stops Ollama, every process Ray started here, and removes its temp dir: nothing
# of the job is left on the node.
# Reads from the batch script: ARB_VENV, ARB_RUN_DIR, ARB_NODE_TMP, ARB_ENGINE, ARB_OLLAMA_TAGS, ARB_OLLAMA_SLOTS,
# ARB_OLLAMA_MAX_MODELS, ARB_OLLAMA_CONTEXT, ARB_VLLM, ARB_VLLM_MODEL, ARB_VLLM_NAME, ARB_VLLM_MAX_SEQS,
# ARB_VLLM_CONTEXT, RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH (srun passes the batch script's environment to every task).
set -euo pipefail

node=${SLURM_NODEID:?run by srun inside deploy/slurm/arb.sbatch}
job=${SLURM_JOB_ID:?}
py=$ARB_VENV/bin/python
slots=${ARB_OLLAMA_SLOTS:-4}
max_models=${ARB_OLLAMA_MAX_MODELS:-1}
context=${ARB_OLLAMA_CONTEXT:-8192}
ip=$(hostname -I | awk '{print $1}')
log() { echo "[node $node $(hostname)] $*"; }
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

# This job's files on this node, private to its user (Ray makes its own temp dir world-writable, so it lives
# inside). A requeued job keeps its id: what the previous attempt left here is removed first.
tmp=${ARB_NODE_TMP:-/tmp/arb-$job}-$node
rm -rf "$tmp"
mkdir -m 700 "$tmp"

engine=${ARB_ENGINE:-ollama}
ollama_pid=''
vllm_pid=''
ray_pid=''
# shellcheck disable=SC2317  # called by the traps
stop() {
    local code=$1
    trap - TERM INT EXIT
    if [[ -n $ray_pid ]]; then
        kill -TERM "$ray_pid" 2> /dev/null || true
        # `ray start --block` stops what it started, but trial workers can outlive their raylet; they stay in the
        # session `setsid` opened below (its id is the pid of `ray start`): after a grace period none survives
        for _ in $(seq 75); do
            kill -0 "$ray_pid" 2> /dev/null || break
            sleep 0.2
        done
        pkill -KILL -s "$ray_pid" 2> /dev/null || true
        wait "$ray_pid" 2> /dev/null || true
    fi
    for pid in $ollama_pid $vllm_pid; do
        kill -TERM "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
    done
    rm -rf "$tmp"
    log "stopped"
    exit "$code"
}
trap 'stop 0' TERM INT
trap 'stop $?' EXIT

if [[ $engine == vllm ]]; then
    # vLLM serves one model per node (the registry entry's `id` is the served name) with continuous batching and
    # prefix caching (the demos shared by a task's prompts are computed once); loopback only, like Ollama. Trials
    # of that model are placed on nodes whose arb-vllm-model label names it (grid/launch.py).
    : "${ARB_VLLM_MODEL:?ARB_ENGINE=vllm needs ARB_VLLM_MODEL, the checkpoint to serve (a Hugging Face id or path)}"
    : "${ARB_VLLM_NAME:?ARB_ENGINE=vllm needs ARB_VLLM_NAME, the served name (the registry entry id)}"
    vllm_port=$(free_port)
    "${ARB_VLLM:-vllm}" serve "$ARB_VLLM_MODEL" --served-model-name "$ARB_VLLM_NAME" --host 127.0.0.1 \
        --port "$vllm_port" --enable-prefix-caching --max-num-seqs "${ARB_VLLM_MAX_SEQS:-64}" \
        --max-model-len "${ARB_VLLM_CONTEXT:-8192}" > "$ARB_RUN_DIR/vllm-$node.log" 2>&1 &
    vllm_pid=$!
    # /health answers 200 once the engine is up (weights loaded, CUDA graphs captured: minutes for a 7-8B model)
    for _ in $(seq 900); do
        curl -sf "http://127.0.0.1:$vllm_port/health" > /dev/null && break
        kill -0 "$vllm_pid" 2> /dev/null || { log "vllm serve exited; see $ARB_RUN_DIR/vllm-$node.log"; exit 1; }
        sleep 1
    done
    curl -sf "http://127.0.0.1:$vllm_port/health" > /dev/null \
        || { log "vllm did not answer /health within 900 s; see $ARB_RUN_DIR/vllm-$node.log"; exit 1; }
    resources='{}'
    labels="arb-vllm-port=$vllm_port,arb-vllm-model=$ARB_VLLM_NAME"
    served="vllm on 127.0.0.1:$vllm_port ($ARB_VLLM_NAME, up to ${ARB_VLLM_MAX_SEQS:-64} sequences)"
else
    # Ollama has no authentication: loopback only, on a port free on this node now. Its default window is the
    # registry's `context` for requests that somehow lack num_ctx, never Ollama's own (≥ 0.15.5 sizes it from GPU
    # memory: 262,144 tokens on a 48 GiB card, times OLLAMA_NUM_PARALLEL in KV memory).
    ollama_port=$(free_port)
    OLLAMA_HOST=127.0.0.1:$ollama_port OLLAMA_NUM_PARALLEL=$slots OLLAMA_MAX_LOADED_MODELS=$max_models \
        OLLAMA_CONTEXT_LENGTH=$context ollama serve > "$ARB_RUN_DIR/ollama-$node.log" 2>&1 &
    ollama_pid=$!
    for _ in $(seq 120); do
        OLLAMA_HOST=127.0.0.1:$ollama_port ollama list > /dev/null 2>&1 && break
        kill -0 "$ollama_pid" 2> /dev/null || { log "ollama serve exited; see $ARB_RUN_DIR/ollama-$node.log"; exit 1; }
        sleep 1
    done
    for tag in ${ARB_OLLAMA_TAGS:-}; do
        log "ollama pull $tag"
        OLLAMA_HOST=127.0.0.1:$ollama_port ollama pull "$tag" > /dev/null
    done
    resources="{\"ollama_slots\": $slots}"
    labels="arb-ollama-port=$ollama_port,arb-ollama-max-models=$max_models"
    served="ollama on 127.0.0.1:$ollama_port ($slots slots)"
fi

# Ray: its own temp dir per job and node (another job's Ray on this node keeps its own), in a session of its own
# (`setsid`, so that `stop` finds every process of it). Ports Ray would take at a fixed default (GCS 6379, client
# 10001, dashboard agent 52365) are picked free here; Ray picks the others at random. The head's address is
# published on the shared filesystem once it answers.
common=(--block --disable-usage-stats --node-ip-address="$ip" --temp-dir="$tmp/ray"
    --resources="$resources" --labels="$labels"
    --dashboard-agent-listen-port="$(free_port)")
export RAY_preload_python_modules=trainables.trial,datasets
# On SIGTERM, `ray start --block` (Ray 2.60) first drains the node for up to 30 s, for Ray Serve's replicas
# (ray/_private/node.py `_drain_node_before_shutdown`). Nothing here serves; a head still draining when `stop`'s
# grace ran out was SIGKILLed under load (the real-Slurm test, plain `scancel`): stop at once instead.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
if [[ $node == 0 ]]; then
    port=$(free_port)
    head=(--head --port="$port" --include-dashboard=false)
    # Ray Client (port 10001 by default) runs only where ray[client] is installed; Ray refuses the option elsewhere.
    if "$py" -c 'from ray._private.utils import get_ray_client_dependency_error as e; exit(e() is not None)'; then
        head+=(--ray-client-server-port="$(free_port)")
    fi
    setsid "$ARB_VENV/bin/ray" start "${head[@]}" "${common[@]}" &
    ray_pid=$!
    # `ray start` writes ray_current_cluster into its temp dir once the head is up; only then do the workers and
    # the batch script get the address. A head that fails ends this node's task (and the batch script's wait).
    for _ in $(seq 300); do
        [[ -s $tmp/ray/ray_current_cluster ]] && break
        if ! kill -0 "$ray_pid" 2> /dev/null; then
            log "ray start --head failed (above)"
            touch "$ARB_RUN_DIR/head-failed"
            exit 1
        fi
        sleep 1
    done
    echo "$ip:$port" > "$ARB_RUN_DIR/head-address.tmp" && mv "$ARB_RUN_DIR/head-address.tmp" "$ARB_RUN_DIR/head-address"
else
    for _ in $(seq 600); do [[ -s $ARB_RUN_DIR/head-address ]] && break; sleep 1; done
    [[ -s $ARB_RUN_DIR/head-address ]] || { log "no head address in $ARB_RUN_DIR after 600 s"; exit 1; }
    setsid "$ARB_VENV/bin/ray" start --address="$(cat "$ARB_RUN_DIR/head-address")" "${common[@]}" &
    ray_pid=$!
fi
log "$served, ray $( ((node == 0)) && echo head || echo worker) on $ip"
wait "$ray_pid"
