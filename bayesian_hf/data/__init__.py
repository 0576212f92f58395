"""Datasets: loading text-classification data and the embedded synthetic dataset."""

from .loading import (
    SUPPORTED_EXTENSIONS,
    describe_class_balance,
    load_labelled_texts,
    load_text_classification_data,
)
from .synthetic import (
    IN_DOMAINS,
    LABEL_NAMES,
    OOD_DOMAINS,
    domain_vocabulary,
    load_exchangeable_reviews,
    make_exchangeable_reviews,
)

__all__ = [
    "IN_DOMAINS",
    "LABEL_NAMES",
    "OOD_DOMAINS",
    "SUPPORTED_EXTENSIONS",
    "describe_class_balance",
    "domain_vocabulary",
    "load_exchangeable_reviews",
    "load_labelled_texts",
    "load_text_classification_data",
    "make_exchangeable_reviews",
]
