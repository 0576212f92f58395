"""Classifying the rows of one part: bad rows marked, the others through :func:`bayesian_hf.pipelines.predict` in
length-bucketed batches, a failing batch bisected until the failing texts are alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .readers import row_error

NOTHING_TO_TOKENISE = "nothing to tokenise (no token besides [CLS]/[SEP])"


def length_buckets(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Batches of positions into ``texts``, grouping similar lengths (sorted by character length, ties by
    position): a batch pads to its longest text, so sorting cuts the padding.  Deterministic."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_rows(model: Any, tokenizer: Any, texts: Sequence[Any], *, batch_size: int,
                 predict_kwargs: Mapping[str, Any], progress: Any | None = None
                 ) -> tuple[list[dict[str, Any] | None], list[str | None]]:
    """Records and errors for ``texts`` (any values): bad rows get an error and no record; the others are
    classified by :func:`bayesian_hf.pipelines.predict` in length-bucketed batches.  A batch that raises is
    split in halves until the texts that fail are alone, so one text that cannot be classified (e.g. nothing to
    tokenise) marks only its own row; when every text of a batch fails alone too, the error is raised (a
    problem of the model or the options, not of the rows)."""
    records: list[dict[str, Any] | None] = [None] * len(texts)
    errors: list[str | None] = [row_error(t) for t in texts]
    good = [i for i, e in enumerate(errors) if e is None]
    if progress is not None and len(good) < len(texts):
        progress.update(len(texts) - len(good))
    for bucket in length_buckets([texts[i] for i in good], batch_size):
        rows = [good[j] for j in bucket]
        failures: list[Exception] = []
        for i, record, error in _predict_isolating(model, tokenizer, texts, rows, predict_kwargs, failures):
            if record is not None and record["num_units"] == 0:
                record, error = None, NOTHING_TO_TOKENISE
            records[i], errors[i] = record, error
        if len(rows) > 1 and len(failures) == len(rows):
            raise failures[0]  # every text fails alone, for a reason that is not the text's: the model or options
        if progress is not None:
            progress.update(len(rows))
    return records, errors


def _predict_isolating(model: Any, tokenizer: Any, texts: Sequence[Any], rows: list[int],
                       predict_kwargs: Mapping[str, Any], failures: list[Exception]):
    """``(row, record, error)`` for ``rows``: one ``predict`` call, bisected on failure."""
    # lazy: pipelines imports torch and transformers; looked up per call, so a test can substitute predict
    from ..pipelines import predict

    try:
        out = predict(model, tokenizer, [texts[i] for i in rows], **predict_kwargs)
    except (ValueError, RuntimeError) as err:
        if len(rows) == 1:
            if "nothing to classify" in str(err):  # a property of the text (only control / zero-width characters)
                yield rows[0], None, NOTHING_TO_TOKENISE
                return
            failures.append(err)
            yield rows[0], None, f"prediction failed: {type(err).__name__}: {err}"
            return
        half = len(rows) // 2
        yield from _predict_isolating(model, tokenizer, texts, rows[:half], predict_kwargs, failures)
        yield from _predict_isolating(model, tokenizer, texts, rows[half:], predict_kwargs, failures)
        return
    for i, record in zip(rows, out):
        yield i, record, None
