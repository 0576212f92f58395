"""Bounds on the work a request can cause, checked before the expensive parts run.

- :func:`parse_json_body`: the request body as JSON, parsed value by value with the standard library's C scanner
  so that the number of values, the nesting depth, the number of ``texts`` and the size of each text are checked
  *while* parsing: a 4 MB body of a million empty strings stops at the ``max_texts + 1``-th one instead of being
  parsed, then validated item by item (which took 15-19 s on the event loop). Bodies must be UTF-8 (no BOM, no
  UTF-16/32, which ``json.loads`` would otherwise guess), and duplicate keys are refused.
- :func:`estimate_work` / :func:`pass_work`: tokens x effective orderings of a request (refused above
  ``max_request_work``) and of one forward pass (the batcher splits requests so a pass stays under
  ``max_pass_work``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from json.decoder import scanstring
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_SCANNER = json.JSONDecoder().scan_once
MAX_DEPTH = 16
MAX_EXTRA_VALUES = 256  # JSON values allowed besides the texts (options, thresholds)
_FACTORIAL_CAP = 20  # 20! > any num_orderings


class BodyLimitError(ValueError):
    """A body that breaks a bound: ``status`` 413 (too large) or 422 (invalid), ``code`` and ``loc`` for the
    error response."""

    def __init__(self, status: int, code: str, message: str, loc: Sequence[str | int] = ("body",)) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.loc = list(loc)


@dataclass(frozen=True)
class BodyLimits:
    """What :func:`parse_json_body` enforces."""

    max_texts: int
    max_text_bytes: int
    max_depth: int = MAX_DEPTH
    max_extra_values: int = MAX_EXTRA_VALUES


class _Parser:
    def __init__(self, text: str, limits: BodyLimits) -> None:
        self.s = text
        self.limits = limits
        self.values = 0
        self.max_values = limits.max_texts + limits.max_extra_values

    def ws(self, i: int) -> int:
        return _WS.match(self.s, i).end()

    def fail(self, message: str, pos: int) -> json.JSONDecodeError:
        return json.JSONDecodeError(message, self.s, pos)

    def count(self, path: tuple) -> None:
        self.values += 1
        if self.values > self.max_values:
            raise BodyLimitError(422, "validation_error", f"the JSON body has more than {self.max_values} values",
                                 ("body", *path[:1]))

    def value(self, i: int, path: tuple, depth: int) -> tuple[Any, int]:
        if depth > self.limits.max_depth:
            raise BodyLimitError(422, "validation_error", f"the JSON body is nested deeper than "
                                 f"{self.limits.max_depth} levels", ("body", *path[:1]))
        char = self.s[i:i + 1]
        if char == "{":
            return self.obj(i + 1, path, depth + 1)
        if char == "[":
            return self.array(i + 1, path, depth + 1)
        if char == '"':
            value, end = scanstring(self.s, i + 1, True)
            self.check_text(value, path)
            return value, end
        if not char:
            raise self.fail("Expecting value", i)
        try:
            return _SCANNER(self.s, i)  # a number, true, false, null, NaN or Infinity (containers handled above)
        except StopIteration:
            raise self.fail("Expecting value", i) from None

    def check_text(self, value: str, path: tuple) -> None:
        if path == ("text",) or (len(path) == 2 and path[0] == "texts"):
            if 4 * len(value) > self.limits.max_text_bytes:  # a UTF-8 character takes at most 4 bytes
                try:
                    size = len(value.encode("utf-8"))
                except UnicodeEncodeError:  # a lone surrogate: left to the schema's clear message
                    return
                if size > self.limits.max_text_bytes:
                    raise BodyLimitError(413, "text_too_large", f"text is {size} bytes; the limit is "
                                         f"{self.limits.max_text_bytes}", ("body", *path))

    def obj(self, i: int, path: tuple, depth: int) -> tuple[dict, int]:
        out: dict[str, Any] = {}
        i = self.ws(i)
        if self.s[i:i + 1] == "}":
            return out, i + 1
        while True:
            if self.s[i:i + 1] != '"':
                raise self.fail("Expecting property name enclosed in double quotes", i)
            key, i = scanstring(self.s, i + 1, True)
            if key in out:
                raise BodyLimitError(422, "invalid_json", f"duplicate key {key[:50]!r} in a JSON object",
                                     ("body", *path, key[:50]))
            i = self.ws(i)
            if self.s[i:i + 1] != ":":
                raise self.fail("Expecting ':' delimiter", i)
            i = self.ws(i + 1)
            self.count(path)
            out[key], i = self.value(i, (*path, key), depth)
            i = self.ws(i)
            char = self.s[i:i + 1]
            if char == "}":
                return out, i + 1
            if char != ",":
                raise self.fail("Expecting ',' delimiter", i)
            i = self.ws(i + 1)

    def array(self, i: int, path: tuple, depth: int) -> tuple[list, int]:
        out: list[Any] = []
        i = self.ws(i)
        if self.s[i:i + 1] == "]":
            return out, i + 1
        is_texts = path == ("texts",)
        while True:
            if is_texts and len(out) >= self.limits.max_texts:
                raise BodyLimitError(413, "too_many_texts", f"more than {self.limits.max_texts} texts; the limit is "
                                     f"{self.limits.max_texts}", ("body", "texts"))
            self.count(path)
            value, i = self.value(i, (*path, len(out)), depth)
            out.append(value)
            i = self.ws(i)
            char = self.s[i:i + 1]
            if char == "]":
                return out, i + 1
            if char != ",":
                raise self.fail("Expecting ',' delimiter", i)
            i = self.ws(i + 1)


def parse_json_body(body: bytes, limits: BodyLimits) -> Any:
    """Parse a request body as strict UTF-8 JSON within ``limits``.

    Raises:
        json.JSONDecodeError: not JSON (also: not UTF-8, a byte-order mark, duplicate keys are BodyLimitError).
        BodyLimitError: too many texts or values (413 / 422), a text over ``max_text_bytes`` (413), too deep,
            duplicate keys (422).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyLimitError(422, "invalid_json", "the request body is not valid UTF-8 (UTF-16 and other "
                             f"encodings are not accepted; byte {err.start})") from None
    parser = _Parser(text, limits)
    try:
        i = parser.ws(0)
        if text[i:i + 1] == "\ufeff":
            raise parser.fail("Unexpected byte-order mark: send UTF-8 without a BOM", i)
        value, i = parser.value(i, (), 0)
        i = parser.ws(i)
        if i != len(text):
            raise parser.fail("Extra data", i)
    except RecursionError:
        raise BodyLimitError(422, "validation_error", "the JSON body is nested too deeply") from None
    except (json.JSONDecodeError, BodyLimitError):
        raise
    except ValueError as err:  # e.g. an integer literal longer than Python's digit limit
        raise BodyLimitError(422, "invalid_json", f"the request body is not valid JSON: {str(err)[:200]}") from None
    return value


# ---------------------------------------------------------------------------------------------------- work
def effective_orderings(num_units: int, num_orderings: int) -> int:
    """Orderings the model actually runs for a text of ``num_units`` units: ``min(k, m!)`` (at least 1), as
    :func:`bayesian_hf.orderings.effective_num_orderings` does for a batch."""
    m = max(int(num_units), 0)
    if m >= _FACTORIAL_CAP:
        return max(1, int(num_orderings))
    return max(1, min(int(num_orderings), math.factorial(m)))


def pass_work(tokens: Sequence[int], units: Sequence[int], num_orderings: int) -> int:
    """Token-orderings of ONE forward pass over texts of ``tokens`` lengths and ``units`` units: every text is
    padded to the longest and runs the batch's effective orderings (those of its text with most units)."""
    if not len(tokens):
        return 0
    return len(tokens) * max(tokens) * effective_orderings(max(units), num_orderings)


def request_work(tokens: Sequence[int], units: Sequence[int], num_orderings: int) -> int:
    """Token-orderings of a request: sum over texts of tokens x effective orderings (no padding: the least any
    split of the request into passes can cost)."""
    return sum(t * effective_orderings(u, num_orderings) for t, u in zip(tokens, units))


_WORD = re.compile(r"\w+")


def work_lower_bound(texts: Sequence[str], num_orderings: int, *, max_length: int, segmentation: str) -> int:
    """A lower bound of :func:`request_work` computed without tokenising (a few ms for 64 x 10 kB), so a request
    far over the budget is refused before the tokenizer spends a second on it.

    Per text: tokens >= min(max_length, word runs + 2), since every run of word characters gives at least one
    token; units >= the sentences that start before character ``max_length - 2`` and hold a word character,
    since a token covers at least one character, so such a sentence starts inside the kept tokens."""
    from ..tokenization import split_sentences

    total = 0
    for text in texts:
        words = sum(1 for _ in itertools.islice(_WORD.finditer(text), max_length))
        tokens = min(max_length, words + 2) if words else 0
        units = 1 if words else 0
        if segmentation == "sentence" and words:
            head = text[: max_length - 2]
            units = max(1, sum(1 for start, end in split_sentences(head) if _WORD.search(text, start, end)))
        total += tokens * effective_orderings(units, num_orderings)
    return total


def _prefix(text: str, chars: int) -> str:
    """``text`` cut at the last space before ``chars`` characters (the whole text when it is shorter or has no
    space there): a space ends a word for every tokenizer, so the tokens and units of the prefix are the first
    ones of the whole text."""
    if len(text) <= chars:
        return text
    cut = text.rfind(" ", 0, chars)
    return text[:cut] if cut > 0 else text


def measure_texts(tokenizer: Any, texts: Sequence[str], *, max_length: int, segmentation: str,
                  chars_per_token: int = 6) -> tuple[list[int], list[int], list[int]]:
    """Per text: tokens after truncation (special tokens included), units, and content tokens (tokens that
    belong to a unit; 0 means nothing to classify). Runs the same tokenisation as ``predict``.

    Only a prefix of ``chars_per_token * max_length`` characters (cut at a space) is tokenised first: when it
    already fills ``max_length`` tokens the counts are exact, since the rest would be truncated; the few texts
    whose prefix does not are measured whole. A 64 x 10 kB request is measured in a fraction of the time its
    full tokenisation takes, so requests refused for their work cost little to refuse."""
    from ..tokenization import tokenize_with_units

    def run(batch: list[str]) -> tuple[list[int], list[int], list[int]]:
        enc = tokenize_with_units(tokenizer, batch, max_length=max_length, segmentation=segmentation,
                                  padding=False, return_tensors=None)
        return ([len(ids) for ids in enc["input_ids"]], [max(u, default=0) for u in enc["unit_ids"]],
                [sum(1 for x in u if x > 0) for u in enc["unit_ids"]])

    texts = list(texts)
    prefixes = [_prefix(t, chars_per_token * max_length) for t in texts]
    tokens, units, content = run(prefixes)
    redo = [i for i, (t, p) in enumerate(zip(texts, prefixes)) if len(p) < len(t) and tokens[i] < max_length]
    if redo:
        full = run([texts[i] for i in redo])
        for j, i in enumerate(redo):
            tokens[i], units[i], content[i] = full[0][j], full[1][j], full[2][j]
    return tokens, units, content
