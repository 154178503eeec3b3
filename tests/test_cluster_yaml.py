"""cluster.yaml must pass Ray's own cluster-config validation and keep the promises its header makes."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_ray_validation() -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    # what `ray up` does before launching anything: fill defaults, then check against Ray's JSON schema
    validate_config(prepare_config(config))


def test_gpu_workers_advertise_ollama_slots_and_run_ollama() -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] >= 1 and worker["resources"]["ollama_slots"] >= 1
    setup = "\n".join(config["worker_setup_commands"])
    assert "ollama.com/install.sh" in setup and "OLLAMA_NUM_PARALLEL" in setup and "ollama pull" in setup
    head = "\n".join(config["head_start_ray_commands"])
    assert "mlflow server" in head and "postgresql://" in head
    assert "sk-" not in CLUSTER.read_text()  # no key ever written into the file


def test_validation_would_catch_a_broken_file() -> None:
    import pytest

    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_workerz"] = 1
    with pytest.raises(Exception, match="min_workerz"):
        validate_config(prepare_config(config))
