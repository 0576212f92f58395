"""Which shard a process runs: explicit ``num_shards``/``shard_index``, ``torchrun``/``accelerate`` ranks, a
Kubernetes indexed Job or a Slurm array."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Which shard this process runs, and whether it is one rank of a ``torchrun``/``accelerate`` group."""

    num_shards: int
    shard_index: int
    distributed: bool = False
    local_rank: int = 0
    source: str = "single process"


def resolve_shard(num_shards: int | None, shard_index: int | None,
                  environ: Mapping[str, str] | None = None) -> ShardPlan:
    """The shard of this process.

    * ``WORLD_SIZE > 1`` (``torchrun``, ``accelerate launch``): one shard per rank; explicit shard flags are an
      error (the launcher already decides).
    * ``num_shards > 1`` without ``shard_index``: the index comes from ``JOB_COMPLETION_INDEX`` (Kubernetes
      indexed Job) or ``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (Slurm array).
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        if num_shards not in (None, world) or shard_index is not None:
            raise ValueError(f"running under a distributed launcher (WORLD_SIZE={world}): every rank is one shard; "
                             "drop --num_shards/--shard_index")
        rank = int(env.get("RANK", "0"))
        return ShardPlan(world, rank, True, int(env.get("LOCAL_RANK", rank)), f"rank {rank} of {world}")
    n = 1 if num_shards is None else int(num_shards)
    if n < 1:
        raise ValueError(f"num_shards must be >= 1, got {n}")
    source = "--shard_index"
    if shard_index is None:
        if n == 1:
            shard_index, source = 0, "single process"
        elif env.get("JOB_COMPLETION_INDEX", "") != "":
            shard_index, source = int(env["JOB_COMPLETION_INDEX"]), "JOB_COMPLETION_INDEX"
        elif env.get("SLURM_ARRAY_TASK_ID", "") != "":
            shard_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            source = "SLURM_ARRAY_TASK_ID"
        else:
            raise ValueError(f"--num_shards {n} needs --shard_index (or JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID "
                             "in the environment)")
    if not 0 <= int(shard_index) < n:
        raise ValueError(f"shard_index must be in [0, {n - 1}] for {n} shards, got {shard_index} (from {source})")
    return ShardPlan(n, int(shard_index), False, 0, source)
