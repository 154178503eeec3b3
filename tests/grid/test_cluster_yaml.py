"""cluster.yaml must pass Ray's own cluster-config validation and keep the promises its header makes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


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


def test_vllm_workers_serve_the_model_their_label_names() -> None:
    """The vLLM node type's label names a shipped `provider: vllm` entry, its server answers on the labelled port
    under that name, with prefix caching and a batch size, on loopback."""
    from trainables.registry import load_registry

    config = yaml.safe_load(CLUSTER.read_text())
    node = config["available_node_types"]["vllm_worker"]
    served, port = node["labels"]["arb-vllm-model"], node["labels"]["arb-vllm-port"]
    entry = next(e for e in load_registry().models.values() if e.id == served)
    assert entry.provider == "vllm"
    serve = next(c for c in node["worker_setup_commands"] if "vllm serve" in c)
    for flag in (f"--served-model-name {served}", f"--port {port}", "--host 127.0.0.1", "--enable-prefix-caching",
                 "--max-num-seqs", f"--max-model-len {entry.context}"):  # fmt: skip
        assert flag in serve, flag
    # the type's own list replaces the global setup: arb is installed there too
    assert set(config["setup_commands"]) <= set(node["worker_setup_commands"])


def test_validation_would_catch_a_broken_file() -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_workerz"] = 1
    with pytest.raises(Exception, match="min_workerz"):
        validate_config(prepare_config(config))


def test_no_password_in_the_file_and_no_unauthenticated_listener() -> None:
    import re

    from grid import cluster_secrets

    text = CLUSTER.read_text()
    config = yaml.safe_load(text)
    assert not re.search(r"PASSWORD\s+'", text, re.IGNORECASE)  # no literal password for a database role
    assert not re.search(r"postgresql://[^@\s]*:[^@\s]*@", text)  # no password in a database URI
    commands = {k: "\n".join(v) for k, v in config.items() if k.endswith("_commands")}
    # the tracking server: authenticated, Host headers restricted; its secrets generated on the head
    mlflow = next(line for line in config["head_start_ray_commands"] if "mlflow server" in line)
    assert "--app-name basic-auth" in mlflow and "--allowed-hosts" in mlflow and ". ~/.arb/server.env" in mlflow
    assert "--disable-security-middleware" not in text
    for sub in ("init", "postgres-sql"):
        assert f"python -m grid.cluster_secrets {sub}" in commands["head_setup_commands"]
    assert "python -m grid.cluster_secrets add-user" in commands["head_start_ray_commands"]
    # Ollama has no authentication: loopback only
    assert "OLLAMA_HOST=127.0.0.1:" in commands["worker_setup_commands"] and "0.0.0.0:11434" not in text
    # only the trials' directory goes to the workers, and their Ray starts with it in its environment
    assert config["cluster_synced_files"] == ["~/.arb/cluster"]
    assert "~/.arb/cluster/*.env" in commands["worker_start_ray_commands"]
    # the subcommands cluster.yaml calls exist
    for sub in re.findall(r"python -m grid\.cluster_secrets ([a-z-]+)", text):
        with pytest.raises(SystemExit) as exit_:
            cluster_secrets.main([sub, "--help"])
        assert exit_.value.code == 0


def test_ollama_serves_the_registrys_context() -> None:
    """The nodes' Ollama default context is the registry's for every Ollama model: a request that somehow went
    without `num_ctx` gets the same window, so no model is loaded twice with different sizes."""
    import re

    from trainables.registry import load_registry

    setup = "\n".join(yaml.safe_load(CLUSTER.read_text())["worker_setup_commands"])
    found = re.findall(r"OLLAMA_CONTEXT_LENGTH=(\d+)", setup)
    contexts = {e.context for e in load_registry().models.values() if e.provider == "ollama"}
    assert len(found) == 1 and contexts == {int(found[0])}


def test_the_study_goes_to_the_bucket_and_up_refuses_without_one(tmp_path: Path) -> None:
    """Artifacts and Ray Tune's state on S3, so `ray down` deletes neither; the bucket line, run as `ray up` runs
    it, stops the setup while it still says CHANGE-ME and writes storage.env once edited."""
    import subprocess

    config = yaml.safe_load(CLUSTER.read_text())
    (line,) = [c for c in config["head_setup_commands"] if "bucket=" in c]
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    refused = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "set bucket=" in refused.stderr
    edited = line.replace("s3://CHANGE-ME/arb", "s3://team-bucket/arb")
    subprocess.run(["bash", "-c", edited], env=env, check=True, timeout=30)
    storage = (home / ".arb" / "cluster" / "storage.env").read_text().split()
    assert storage == ["ARB_STORAGE_PATH=s3://team-bucket/arb/ray", "ARB_ARTIFACTS=s3://team-bucket/arb/mlartifacts",
                       "ARB_POSTGRES=localhost:5432"]  # fmt: skip
    assert (home / ".arb" / "cluster").stat().st_mode & 0o077 == 0
    external = edited.replace("db=;", "db=arb-db.example.internal:5432;")
    subprocess.run(["bash", "-c", external], env=env, check=True, timeout=30)
    assert "ARB_POSTGRES=arb-db.example.internal:5432" in (home / ".arb" / "cluster" / "storage.env").read_text()
    mlflow = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert '--artifacts-destination "$ARB_ARTIFACTS"' in mlflow and "storage.env" in mlflow
    assert '"postgresql://mlflow@$ARB_POSTGRES/mlflow"' in mlflow
    init = next(c for c in config["head_setup_commands"] if "cluster_secrets init" in c)
    assert '--postgres "$ARB_POSTGRES"' in init and init.startswith(". ~/.arb/cluster/storage.env")
    assert config["head_setup_commands"].index(line) < config["head_setup_commands"].index(init)
    assert "/mnt/arb" not in CLUSTER.read_text()  # no hand-made NFS mount
