"""Runs a study's rounds on a Ray cluster: each run an independent Ray task with its own
CPU/GPU needs, its row appended as it finishes (`qtune study --ray-address`).

The protocol (which runs, which rate is best, when a sweep is extended, which seeds
follow) stays in :class:`qtune.study.runner.StudyRunner`; only a round's runs go out, so
the rows are the ones a sequential run gives. Every worker needs qtune installed, the
data (``QTUNE_DATA_DIR``) and a runs folder it can write; on one machine (``local``)
that holds by itself. Ray is an optional dependency (``pip install 'qtune[ray]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qtune.errors import QtuneError


def _train_remote(config: Any) -> dict[str, Any]:
    """One run in a Ray worker (qtune's own training loop, as `qtune finetune`)."""
    import os

    import torch
    from qtune.finetune.train import train

    # A worker owns the CPUs Ray gave it; torch would otherwise take every core.
    cpus = int(float(os.environ.get("QTUNE_RAY_CPUS", "1")))
    torch.set_num_threads(max(1, cpus))
    return train(config)


@dataclass
class RayPool:
    """A round's runs as Ray tasks. ``address``: "local" starts a Ray on this machine for
    the study, "auto" joins the one running here, "ray://host:port" a remote cluster."""

    address: str = "local"
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    #: Resources of a local Ray (tests start two workers' worth).
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        try:
            import ray
        except ImportError as error:
            raise QtuneError("--ray-address needs Ray: pip install 'qtune[ray]' (or "
                             "ray==2.60.0) on this machine and every worker") from error
        if not ray.is_initialized():
            environment = {"env_vars": {"QTUNE_RAY_CPUS": str(self.cpus_per_run)}}
            try:
                if self.address == "local":
                    ray.init(num_cpus=self.local_cpus, runtime_env=environment,
                             include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.address, runtime_env=environment,
                             log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise QtuneError(f"cannot reach a Ray cluster at {self.address!r} ({error}); "
                                 "start one (`ray start --head`) or use --ray-address "
                                 "local") from error
        self._task = ray.remote(num_cpus=self.cpus_per_run,
                                num_gpus=self.gpus_per_run)(_train_remote)

    def run(self, configs: list[tuple[Any, Any]]) -> Iterator[tuple[Any, dict[str, Any]]]:
        """(cell, metrics) of every run, in the order they finish."""
        import ray

        pending = {self._task.remote(config): cell for cell, config in configs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for reference in done:
                cell = pending.pop(reference)
                try:
                    yield cell, ray.get(reference)
                except ray.exceptions.RayTaskError as error:
                    for other in pending:
                        ray.cancel(other)
                    raise QtuneError(f"the run {cell} failed on Ray: {error.cause!r}; the "
                                     "finished runs are in runs.csv, rerun the study to "
                                     "resume") from error

    def close(self) -> None:
        import ray

        if self.address == "local" and ray.is_initialized():
            ray.shutdown()
