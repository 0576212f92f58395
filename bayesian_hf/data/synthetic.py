"""The embedded "exchangeable reviews" dataset.

Multi-sentence reviews are assembled from sentence templates. Every sentence carries a known
polarity (+1 positive, -1 negative, 0 neutral filler) and the clean label is a function of the
*multiset* of polarities only::

    clean_label = "positive" if sum(polarities) > 0 else "negative"

so the order of the sentences is exchangeable by construction: any permutation of a review's
sentences has the same clean label.  The number of polar sentences is always odd, so the sum is
never zero.  On top of the clean label, each example draws a ground-truth label-noise rate
(aleatoric noise) and its observed ``label`` is flipped with that probability.

An out-of-distribution split ("spacecraft maintenance logs") uses the same label rule with
disjoint nouns, adjectives, verbs and templates; it is meant for epistemic / OOD checks.

Everything is generated with :class:`random.Random` instances seeded from
:class:`numpy.random.SeedSequence`, so a given seed always yields an identical dataset.
See ``docs/data.md`` for the full description.

One cohesive thing over ~400 lines: the word lists and templates (about 300 lines of data, the same shape per domain)
and the generator that fills them define one dataset, and the tests check the generator against those very lists.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

__all__ = [
    "LABEL_NAMES",
    "IN_DOMAINS",
    "OOD_DOMAINS",
    "make_exchangeable_reviews",
    "load_exchangeable_reviews",
    "domain_vocabulary",
]

LABEL_NAMES: list[str] = ["negative", "positive"]

# --------------------------------------------------------------------------------------------
# Vocabulary.  Slot names in templates: {noun}, {pos}, {pos2}, {neg}, {neg2}, {intens},
# {adv}, {pverb}, {nverb}, plus domain-specific neutral slots.
# --------------------------------------------------------------------------------------------

# Adjectives shared by all in-distribution domains.
_IN_POS_ADJ = [
    "excellent", "wonderful", "delightful", "superb", "fantastic", "outstanding", "lovely",
    "impressive", "charming", "brilliant", "pleasant", "terrific", "marvelous", "splendid",
    "exceptional", "fabulous", "gorgeous", "great", "enjoyable", "stellar", "remarkable",
    "satisfying", "memorable", "flawless", "perfect", "inviting", "elegant", "refreshing",
    "amazing", "exquisite", "sublime", "phenomenal", "admirable", "superior", "heavenly",
    "charismatic", "dazzling", "wholesome", "magnificent", "top-notch",
]
_IN_NEG_ADJ = [
    "terrible", "awful", "dreadful", "horrible", "disappointing", "mediocre", "bland", "poor",
    "lousy", "dismal", "atrocious", "subpar", "unpleasant", "disgusting", "boring", "tedious",
    "shabby", "sloppy", "unbearable", "frustrating", "pathetic", "miserable", "abysmal", "dull",
    "forgettable", "overpriced", "careless", "rude", "filthy", "cramped", "stale", "greasy",
    "clumsy", "lackluster", "inferior", "appalling", "shoddy", "grim", "painful", "tasteless",
]
# Degree words: they modify strength, not sign.
_IN_INTENS = [
    "very", "really", "truly", "extremely", "incredibly", "remarkably", "genuinely",
    "absolutely", "thoroughly", "exceptionally", "particularly", "quite", "rather", "utterly",
    "deeply", "hugely", "seriously", "unusually", "decidedly", "simply", "especially",
    "downright", "totally", "undeniably",
]
# Sentence adverbs: neutral discourse markers.
_IN_ADV = [
    "Honestly", "Frankly", "Overall", "Admittedly", "Clearly", "Certainly", "Personally",
    "Obviously", "Truthfully", "Basically", "Ultimately", "Evidently", "Undoubtedly",
    "Candidly", "Naturally", "Apparently", "Generally", "Altogether", "Surprisingly",
    "Predictably", "Unquestionably", "Plainly", "Essentially", "Realistically",
]
_IN_POS_VERB = [
    "loved", "enjoyed", "adored", "appreciated", "savored", "relished", "treasured", "admired",
    "cherished", "praised", "celebrated", "fancied", "welcomed", "applauded", "valued",
    "liked", "raved about", "fell for", "was won over by", "was delighted by",
]
_IN_NEG_VERB = [
    "hated", "regretted", "disliked", "loathed", "resented", "despised", "detested",
    "deplored", "abhorred", "was annoyed by", "was let down by", "was irritated by",
    "complained about", "was disgusted by", "was bored by", "was offended by",
    "could not stand", "was appalled by", "grumbled about", "was fed up with",
]

_IN_NOUNS: dict[str, list[str]] = {
    "restaurants": [
        "food", "service", "waiter", "dessert", "pasta", "steak", "soup", "menu", "wine list",
        "atmosphere", "staff", "chef", "salad", "bread", "pizza", "sushi", "burger", "curry",
        "appetizer", "coffee", "decor", "patio", "seafood", "noodle bowl", "taco", "brunch",
        "cocktail", "risotto", "dumpling", "bartender", "lasagna", "sandwich", "cheesecake",
        "espresso", "omelette", "ramen",
    ],
    "movies": [
        "plot", "acting", "script", "soundtrack", "director", "cinematography", "lead actor",
        "villain", "ending", "dialogue", "pacing", "visual effect", "cast", "screenplay",
        "score", "editing", "sequel", "costume design", "twist", "opening scene",
        "choreography", "narrator", "premise", "climax", "storyline", "protagonist",
        "supporting cast", "finale", "trailer", "animation", "cameo", "fight scene",
        "camera work", "lighting", "documentary", "comedy",
    ],
    "hotels": [
        "room", "bed", "lobby", "receptionist", "pool", "breakfast buffet", "bathroom", "view",
        "concierge", "gym", "spa", "shower", "pillow", "housekeeping", "balcony", "elevator",
        "wifi", "minibar", "suite", "check-in", "parking", "front desk", "towel", "carpet",
        "mattress", "hallway", "rooftop bar", "sauna", "doorman", "bellhop", "room service",
        "courtyard", "terrace", "linen", "air conditioning", "shuttle",
    ],
}

# Neutral slot fillers, per in-distribution domain.
_IN_NEUTRAL_SLOTS: dict[str, dict[str, list[str]]] = {
    "restaurants": {
        "companion": ["sister", "brother", "colleagues", "parents", "roommate", "cousin",
                      "neighbor", "boss", "grandmother", "book club", "coworker", "uncle"],
        "occasion": ["a birthday", "a business lunch", "an anniversary", "a quick dinner",
                     "a Sunday lunch", "a farewell party", "a first date", "a reunion"],
        "time": ["noon", "seven", "eight thirty", "half past six", "nine", "one o'clock"],
        "place": ["near the station", "on the main street", "next to the bank",
                  "across from the library", "in the old town", "by the harbor"],
    },
    "movies": {
        "companion": ["sister", "brother", "friends", "parents", "roommate", "cousin",
                      "neighbor", "kids", "grandfather", "film club", "classmates", "aunt"],
        "occasion": ["a Friday night", "a rainy afternoon", "a long flight", "a holiday",
                     "a weekday matinee", "a festival screening", "a late show"],
        "time": ["noon", "seven", "ten", "half past eight", "midnight", "four o'clock"],
        "place": ["at the multiplex", "at home", "on a streaming service", "at a drive-in",
                  "at the art house cinema", "on my laptop"],
    },
    "hotels": {
        "companion": ["sister", "brother", "family", "parents", "partner", "cousin",
                      "neighbor", "kids", "grandparents", "tour group", "colleagues", "uncle"],
        "occasion": ["a conference", "a honeymoon", "a weekend getaway", "a layover",
                     "a family holiday", "a wedding", "a business trip", "a ski trip"],
        "time": ["noon", "two", "eleven", "half past three", "midnight", "six o'clock"],
        "place": ["near the airport", "downtown", "by the beach", "next to the convention center",
                  "in the old quarter", "close to the stadium"],
    },
}

# Templates (in-distribution).  Negations flip the sign of the adjective they contain, which
# makes the task require more than a bag of adjectives.
_IN_POS_TEMPLATES = [
    "The {noun} was {intens} {pos}.",
    "{adv}, the {noun} was {pos}!",
    "I {pverb} the {noun}.",
    "What a {pos} {noun}!",
    "The {noun} was {pos} and {pos2}.",
    "I would happily recommend the {noun} to anyone.",
    "The {noun} was not {neg} at all.",
    "Nothing about the {noun} was {neg}.",
    "The {noun} exceeded my expectations!",
    "{adv}, I {pverb} the {noun}.",
    "Everyone agreed that the {noun} was {pos}.",
    "The {noun} felt {intens} {pos} from start to finish.",
    "I was pleasantly surprised by how {pos} the {noun} was.",
    "Far from {neg}, the {noun} was {pos}!",
]
_IN_NEG_TEMPLATES = [
    "The {noun} was {intens} {neg}.",
    "{adv}, the {noun} was {neg}!",
    "I {nverb} the {noun}.",
    "What a {neg} {noun}!",
    "The {noun} was {neg} and {neg2}.",
    "I would never recommend the {noun} to anyone.",
    "The {noun} was not {pos} at all.",
    "Nothing about the {noun} was {pos}.",
    "The {noun} fell short of my expectations!",
    "{adv}, I {nverb} the {noun}.",
    "Everyone agreed that the {noun} was {neg}.",
    "The {noun} felt {intens} {neg} from start to finish.",
    "I was unpleasantly surprised by how {neg} the {noun} was.",
    "Far from {pos}, the {noun} was {neg}!",
]
_IN_NEUTRAL_TEMPLATES = [
    "I went with my {companion}.",
    "We were there for {occasion}.",
    "We arrived around {time}.",
    "This was {place}.",
    "It was my {ordinal} visit.",
    "I had read about the {noun} before going.",
    "{adv}, I had no particular expectations about the {noun}.",
    "My {companion} chose the place.",
    "This review covers the {noun} among other things.",
    "We paid by card.",
    "I am writing this a {span} later.",
    "The {noun} was mentioned in a magazine.",
]
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "tenth"]
_SPANS = ["week", "month", "day", "fortnight", "year"]

# Out-of-distribution domain: spacecraft maintenance logs.  Disjoint nouns, adjectives, verbs,
# degree words and templates.
_OOD_NOUNS: dict[str, list[str]] = {
    "spacecraft": [
        "thruster", "heat shield", "reaction wheel", "solar array", "airlock", "docking port",
        "gyroscope", "star tracker", "fuel line", "oxygen scrubber", "antenna", "hull plating",
        "battery bank", "radiator panel", "coolant loop", "landing strut",
        "navigation computer", "hatch seal", "telemetry link", "cargo bay", "pressure valve",
        "ion engine", "life support unit", "robotic arm", "propellant tank", "sensor mast",
        "transponder", "flywheel", "payload fairing", "avionics rack", "magnetometer",
        "parachute canister", "heat exchanger", "umbilical connector", "sun sensor",
        "water recycler",
    ],
}
_OOD_POS_ADJ = [
    "nominal", "operational", "stable", "calibrated", "pristine", "airtight", "responsive",
    "aligned", "intact", "sealed", "optimal", "functional", "reliable", "serviceable",
    "spotless", "robust", "secure", "synchronized", "certified", "uncontaminated", "efficient",
    "steady", "watertight", "balanced", "within tolerance", "flight-ready", "leak-free",
    "well-lubricated", "fully charged", "shielded",
]
_OOD_NEG_ADJ = [
    "corroded", "cracked", "leaking", "misaligned", "degraded", "overheated", "fractured",
    "depressurized", "jammed", "unresponsive", "contaminated", "faulty", "damaged", "eroded",
    "frayed", "punctured", "unstable", "seized", "malfunctioning", "scorched", "dented",
    "warped", "shorted", "clogged", "desynchronized", "ruptured", "buckled", "out of tolerance",
    "pitted", "discharged",
]
_OOD_DEGREE = ["fully", "entirely", "verifiably", "measurably", "consistently", "persistently",
               "critically", "marginally", "repeatedly", "permanently"]
_OOD_NEUTRAL_SLOTS: dict[str, dict[str, list[str]]] = {
    "spacecraft": {
        "role": ["flight engineer", "commander", "payload specialist", "mission controller",
                 "systems officer", "ground technician", "pilot", "duty officer"],
        "procedure": ["EVA-7", "PRC-12", "MX-4", "TLM-9", "OPS-21", "SYS-3", "NAV-15"],
        "orbit": ["112", "305", "47", "1290", "88", "640", "2114"],
        "shift": ["alpha", "bravo", "charlie", "delta", "echo"],
    },
}
_OOD_POS_TEMPLATES = [
    "Log entry: {noun} inspected and found {pos}.",
    "Crew reports the {noun} is {pos}.",
    "Diagnostics confirm the {noun} remains {degree} {pos}.",
    "Status of {noun}: {pos}!",
    "No anomalies detected in the {noun}.",
    "Technician signed off the {noun} as {pos}.",
    "The {noun} is no longer {neg}.",
    "Post-burn check shows the {noun} {pos} and {pos2}.",
    "Telemetry from the {noun} reads {pos}!",
    "Repair of the {noun} succeeded.",
]
_OOD_NEG_TEMPLATES = [
    "Log entry: {noun} inspected and found {neg}.",
    "Crew reports the {noun} is {neg}.",
    "Diagnostics confirm the {noun} remains {degree} {neg}.",
    "Status of {noun}: {neg}!",
    "Anomaly detected in the {noun}.",
    "Technician flagged the {noun} as {neg}.",
    "The {noun} is no longer {pos}.",
    "Post-burn check shows the {noun} {neg} and {neg2}.",
    "Telemetry from the {noun} reads {neg}!",
    "Repair of the {noun} failed.",
]
_OOD_NEUTRAL_TEMPLATES = [
    "Shift {shift} began on orbit {orbit}.",
    "Procedure {procedure} was logged by the {role}.",
    "The {role} recorded cabin temperature.",
    "Orbit {orbit} completed.",
    "Checklist {procedure} opened for the {noun}.",
    "Next review of the {noun} scheduled by the {role}.",
    "Ground station handover at orbit {orbit}.",
    "The {role} acknowledged procedure {procedure}.",
]


@dataclass(frozen=True)
class _DomainSpec:
    nouns: dict[str, list[str]]
    pos_adj: list[str]
    neg_adj: list[str]
    degree: list[str]
    adverbs: list[str]
    pos_verbs: list[str]
    neg_verbs: list[str]
    pos_templates: list[str]
    neg_templates: list[str]
    neutral_templates: list[str]
    neutral_slots: dict[str, dict[str, list[str]]]


_IN_SPEC = _DomainSpec(
    nouns=_IN_NOUNS, pos_adj=_IN_POS_ADJ, neg_adj=_IN_NEG_ADJ, degree=_IN_INTENS,
    adverbs=_IN_ADV, pos_verbs=_IN_POS_VERB, neg_verbs=_IN_NEG_VERB,
    pos_templates=_IN_POS_TEMPLATES, neg_templates=_IN_NEG_TEMPLATES,
    neutral_templates=_IN_NEUTRAL_TEMPLATES, neutral_slots=_IN_NEUTRAL_SLOTS,
)
_OOD_SPEC = _DomainSpec(
    nouns=_OOD_NOUNS, pos_adj=_OOD_POS_ADJ, neg_adj=_OOD_NEG_ADJ, degree=_OOD_DEGREE,
    adverbs=[], pos_verbs=[], neg_verbs=[],
    pos_templates=_OOD_POS_TEMPLATES, neg_templates=_OOD_NEG_TEMPLATES,
    neutral_templates=_OOD_NEUTRAL_TEMPLATES, neutral_slots=_OOD_NEUTRAL_SLOTS,
)

IN_DOMAINS: tuple[str, ...] = tuple(_IN_NOUNS)
OOD_DOMAINS: tuple[str, ...] = tuple(_OOD_NOUNS)


def domain_vocabulary(domain: str = "in") -> dict[str, set[str]]:
    """Return the content vocabulary of a domain group (``"in"`` or ``"ood"``) or of one domain.

    Keys: ``nouns``, ``adjectives`` (positive and negative), ``verbs``.  Multi-word entries are
    kept whole.  Used by tests to check that the OOD split shares no content words.
    """
    spec, domains = _resolve_domain(domain)
    return {
        "nouns": {w for d in domains for w in spec.nouns[d]},
        "adjectives": set(spec.pos_adj) | set(spec.neg_adj),
        "verbs": set(spec.pos_verbs) | set(spec.neg_verbs),
    }


def _resolve_domain(domain: str) -> tuple[_DomainSpec, tuple[str, ...]]:
    if domain == "in":
        return _IN_SPEC, IN_DOMAINS
    if domain == "ood":
        return _OOD_SPEC, OOD_DOMAINS
    if domain in IN_DOMAINS:
        return _IN_SPEC, (domain,)
    if domain in OOD_DOMAINS:
        return _OOD_SPEC, (domain,)
    raise ValueError(
        f"unknown domain {domain!r}; expected 'in', 'ood' or one of "
        f"{sorted(IN_DOMAINS + OOD_DOMAINS)}"
    )


_SLOT_RE = re.compile(r"\{(\w+)\}")
_ARTICLE_RE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _fill(template: str, rng: random.Random, spec: _DomainSpec, domain: str, noun: str) -> str:
    """Fill every ``{slot}`` of ``template``; distinct second adjectives for ``pos2``/``neg2``."""
    chosen: dict[str, str] = {"noun": noun}
    neutral = spec.neutral_slots[domain]

    def pick(slot: str) -> str:
        if slot in chosen:
            return chosen[slot]
        if slot == "pos":
            value = rng.choice(spec.pos_adj)
        elif slot == "neg":
            value = rng.choice(spec.neg_adj)
        elif slot in ("pos2", "neg2"):
            pool = spec.pos_adj if slot == "pos2" else spec.neg_adj
            first = chosen.get(slot[:3])
            value = rng.choice(pool)
            while value == first:
                value = rng.choice(pool)
        elif slot in ("intens", "degree"):
            value = rng.choice(spec.degree)
        elif slot == "adv":
            value = rng.choice(spec.adverbs)
        elif slot == "pverb":
            value = rng.choice(spec.pos_verbs)
        elif slot == "nverb":
            value = rng.choice(spec.neg_verbs)
        elif slot == "ordinal":
            value = rng.choice(_ORDINALS)
        elif slot == "span":
            value = rng.choice(_SPANS)
        elif slot in neutral:
            value = rng.choice(neutral[slot])
        else:  # pragma: no cover - guarded by the template tables
            raise KeyError(f"unknown template slot {slot!r}")
        chosen[slot] = value
        return value

    # Resolve first adjectives before the "2" variants so they can differ.
    for slot in _SLOT_RE.findall(template):
        pick(slot)
    text = _SLOT_RE.sub(lambda m: chosen[m.group(1)], template)
    text = _ARTICLE_RE.sub(r"\1n ", text)  # "a awful" -> "an awful"
    return text[0].upper() + text[1:]


def _polarity_plan(n_sent: int, label: int, hard: bool, rng: random.Random) -> list[int]:
    """Polarities (+1/-1/0) for one review with ``n_sent`` sentences and the given clean label.

    The number of polar sentences is odd, so their sum is never 0.  ``hard`` examples have a
    margin of exactly 1 with at least 3 polar sentences (e.g. 2 vs 1); easy ones have either a
    single polar sentence or a margin >= 3.
    """
    sign = 1 if label == 1 else -1
    if hard and n_sent >= 3:
        n_polar = rng.choice(range(3, n_sent + 1, 2))
        minority = (n_polar - 1) // 2
    else:
        n_polar = rng.choice(range(1, n_sent + 1, 2))
        minority = rng.randint(0, (n_polar - 3) // 2) if n_polar >= 3 else 0
    majority = n_polar - minority
    plan = [sign] * majority + [-sign] * minority + [0] * (n_sent - n_polar)
    rng.shuffle(plan)
    return plan


def _features() -> Features:
    return Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=LABEL_NAMES),
            "clean_label": ClassLabel(names=LABEL_NAMES),
            "noise_rate": Value("float64"),
            "num_sentences": Value("int64"),
            "polarities": List(Value("int64")),
            "domain": Value("string"),
        }
    )


def _derive_seed(seed: int, *salt: int) -> int:
    """A 64-bit seed from ``seed`` and ``salt`` through :class:`numpy.random.SeedSequence`."""
    return int(np.random.SeedSequence([int(seed), *salt]).generate_state(1, dtype=np.uint64)[0])


def make_exchangeable_reviews(
    n: int,
    *,
    seed: int = 0,
    domain: str = "in",
    min_sentences: int = 2,
    max_sentences: int = 6,
    noise_rates: Sequence[float] = (0.0, 0.1, 0.3),
    noise_probs: Sequence[float] | None = None,
    hard_fraction: float = 0.35,
    positive_fraction: float = 0.5,
) -> Dataset:
    """Generate ``n`` synthetic multi-sentence reviews with an order-invariant label.

    Args:
        n: number of examples.
        seed: RNG seed; the same arguments always give an identical dataset.
        domain: ``"in"`` (mix of restaurants/movies/hotels), ``"ood"`` (spacecraft maintenance
            logs) or a single domain name from :data:`IN_DOMAINS` / :data:`OOD_DOMAINS`.
        min_sentences, max_sentences: inclusive range of sentences per review (uniform).
        noise_rates: ground-truth label-flip probabilities; each example draws one.
        noise_probs: probabilities of drawing each entry of ``noise_rates`` (uniform if None).
        hard_fraction: probability that an example (with >= 3 sentences) is "hard", i.e. its
            polar sentences differ by exactly one (2 vs 1, 3 vs 2, ...).
        positive_fraction: probability that the clean label is positive.

    Returns:
        A :class:`datasets.Dataset` with columns ``text``, ``label`` (observed, possibly
        flipped; ClassLabel ``["negative", "positive"]``), ``clean_label``, ``noise_rate``,
        ``num_sentences``, ``polarities`` (sentence order) and ``domain``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_sentences <= max_sentences:
        raise ValueError(
            f"need 1 <= min_sentences <= max_sentences, got {min_sentences}, {max_sentences}"
        )
    rates = [float(r) for r in noise_rates]
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
        raise ValueError(f"noise_rates must be a non-empty sequence in [0, 1], got {noise_rates}")
    if noise_probs is not None:
        probs = [float(p) for p in noise_probs]
        if len(probs) != len(rates) or any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError("noise_probs must be non-negative, one per noise rate, not all 0")
    else:
        probs = [1.0] * len(rates)
    for name, value in (("hard_fraction", hard_fraction), ("positive_fraction", positive_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")

    spec, domains = _resolve_domain(domain)
    rng = random.Random(_derive_seed(seed, 0x5EED))

    cols: dict[str, list[Any]] = {k: [] for k in _features()}
    for _ in range(n):
        dom = domains[rng.randrange(len(domains))]
        nouns = spec.nouns[dom]
        n_sent = rng.randint(min_sentences, max_sentences)
        clean = 1 if rng.random() < positive_fraction else 0
        plan = _polarity_plan(n_sent, clean, rng.random() < hard_fraction, rng)
        sentences = []
        for pol in plan:
            templates = (spec.pos_templates if pol > 0 else
                         spec.neg_templates if pol < 0 else spec.neutral_templates)
            sentences.append(_fill(rng.choice(templates), rng, spec, dom, rng.choice(nouns)))
        rate = rng.choices(rates, weights=probs)[0]
        observed = 1 - clean if rng.random() < rate else clean
        cols["text"].append(" ".join(sentences))
        cols["label"].append(observed)
        cols["clean_label"].append(clean)
        cols["noise_rate"].append(rate)
        cols["num_sentences"].append(n_sent)
        cols["polarities"].append(plan)
        cols["domain"].append(dom)
    return Dataset.from_dict(cols, features=_features())


SPLITS: tuple[str, ...] = ("train", "validation", "calibration", "test", "ood")


def load_exchangeable_reviews(
    train_size: int = 2000,
    validation_size: int = 300,
    calibration_size: int = 300,
    test_size: int = 500,
    ood_size: int = 300,
    seed: int = 0,
    **kw: Any,
) -> DatasetDict:
    """The embedded dataset as a :class:`datasets.DatasetDict`.

    Splits ``train``/``validation``/``calibration``/``test`` are in-distribution; ``ood`` uses
    the unseen spacecraft-maintenance domain.  Each split is generated from its own seed
    derived from ``seed`` and the split name, so splits differ and are reproducible.  Extra
    keyword arguments go to :func:`make_exchangeable_reviews` (``domain`` is not allowed).
    A split of size 0 is omitted.
    """
    if "domain" in kw:
        raise TypeError("load_exchangeable_reviews() sets the domain of each split itself")
    sizes = dict(zip(SPLITS, (train_size, validation_size, calibration_size, test_size,
                              ood_size)))
    out = {}
    for idx, (split, size) in enumerate(sizes.items()):
        if size <= 0:
            continue
        split_seed = _derive_seed(seed, 1000 + idx)
        out[split] = make_exchangeable_reviews(
            size, seed=split_seed, domain="ood" if split == "ood" else "in", **kw
        )
    return DatasetDict(out)


def _split(text: str) -> list[str]:
    """Private sentence splitter matching how reviews are assembled ('.' or '!' then space)."""
    return [s for s in re.split(r"(?<=[.!])\s+", text.strip()) if s]
