"""The options of a batch prediction job (``BatchPredictOptions``) and their checks."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class BatchPredictOptions:
    """Everything ``bayesian-hf predict`` needs.  See :func:`run_batch_predict`."""

    model: str
    data: str
    output: str
    text_column: str = "text"
    id_column: str | None = None
    batch_size: int = 32
    part_size: int = 1024
    num_orderings: int | None = None
    seed: int | None = None
    thresholds: dict[str, float] | None = None
    max_length: int | None = None
    backend: str = "auto"
    device: str = "cpu"
    compile: bool = False
    torch_threads: int | None = None
    num_shards: int | None = None
    shard_index: int | None = None
    merge_only: bool = False
    overwrite: bool = False
    keep_parts: bool = False
    wait_timeout: float = 3600.0
    progress: bool = True

    def check(self) -> None:
        """Raise ``ValueError`` on an option that cannot work (before any file is touched)."""
        for name in ("batch_size", "part_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_orderings is not None and self.num_orderings < 1:
            raise ValueError(f"num_orderings must be >= 1, got {self.num_orderings}")
        if self.max_length is not None and self.max_length < 3:
            raise ValueError(f"max_length must be >= 3 (room for [CLS], one token and [SEP]), got {self.max_length}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {self.backend!r}")
        if self.wait_timeout < 0:
            raise ValueError(f"wait_timeout must be >= 0 seconds, got {self.wait_timeout}")
        if self.thresholds is not None:
            # lazy: pipelines imports torch and transformers
            from ..pipelines import validate_thresholds

            validate_thresholds(self.thresholds)
