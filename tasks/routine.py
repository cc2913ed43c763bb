"""Steps every routine shares: load the config, open the ops store, save the result.

>>> config = load_routine_config(None)      # doctest: +SKIP
>>> store = open_store(config)              # doctest: +SKIP
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from opsflow.config import Config, default_config_path, load_config
from opsflow.results import RoutineResult
from opsflow.store import OpsStore
from tasks.retry import IO_RETRIES


@task(cache_policy=NO_CACHE)
def load_routine_config(config_path: str | None) -> Config:
    """The config from ``config_path``, ``$OPSFLOW_CONFIG`` or ``./opsflow.yaml`` (bad config: no retry)."""
    path = default_config_path(config_path)
    return load_config(path, missing_ok=config_path is None)


@task(**IO_RETRIES, cache_policy=NO_CACHE)
def open_store(config: Config) -> OpsStore:
    """Connect to the ops store and apply pending migrations."""
    return OpsStore.open(config)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="save-result[{result.routine}]")
def save_result(store: OpsStore, result: RoutineResult, scope: str = "") -> None:
    store.save_result(result, scope)
