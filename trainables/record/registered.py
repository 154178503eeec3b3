"""Programs in MLflow's model registry: a task's routed program is a version of a registered model, with an alias
pointing at the one in use (what a deployment loads: `models:/arb.<grid>.<task>@routed`)."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.record import schema


def registered_name(grid: str, task: str) -> str:
    """The registered model that holds a task's routed program (registry names allow [A-Za-z0-9_.-])."""
    return schema.registered_name(grid, task)


def point_alias(
    client: MlflowClient, name: str, alias: str, model_uri: str, run_id: str, tags: dict[str, str], description: str
) -> str:
    """Register `model_uri` (logged by `run_id`) as a version of `name` (once: a version from the same run is
    reused), creating the registered model with `description` if needed, and point `alias` at it; the version."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=description)
        except MlflowException as exc:  # another `arb route` of the grid created it since the lookup
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    same = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    version = same[0] if same else client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)
