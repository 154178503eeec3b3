"""What runs inside one Ray Tune trial: tasks, LMs, optimizers, evaluation and the MLflow record."""

import os

# DSPy refreshes LiteLLM's model price map over the network on first use; offline that costs a 5 s timeout
# per process, and prices come from our own registry anyway.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__all__: list[str] = []
