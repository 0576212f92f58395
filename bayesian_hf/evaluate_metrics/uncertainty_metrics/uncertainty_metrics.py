"""Local ``evaluate`` module: calibration and uncertainty metrics of a probabilistic classifier.

Load it offline with ``evaluate.load("<path to this folder or file>")`` (``evaluate``'s Hub
metric scripts are unreachable offline; a local path is not).  ``evaluate`` copies this file alone
into its module cache, so the metrics are imported absolutely from the installed ``bayesian_hf``
package instead of relatively.  ``bayesian_hf.metrics.evaluate_module_path()`` gives the folder.
"""

import datasets
import evaluate
import numpy as np

from bayesian_hf.metrics import CLASSIFICATION_METRIC_KEYS, classification_metrics, softmax

_DESCRIPTION = """
Calibration and uncertainty metrics for a classifier that outputs a probability vector per
example: accuracy, F1 (binary F1 of class 1 for two classes, macro F1 otherwise), NLL (nats),
multi-class Brier score, equal-width ECE (15 bins), adaptive (equal-mass) ECE, MCE, AUROC and
AUPRC of detecting errors by the uncertainty score, and AURC (area under the risk-coverage curve).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of per-example probability vectors, shape (N, C), rows summing to 1
        (or logits when `from_logits=True`).
    references: list of integer labels, shape (N,).
    uncertainty: optional list of N scores, higher = less certain (default: 1 - max probability).
    n_bins: number of bins for ECE / adaptive ECE / MCE (default 15).
    from_logits: apply a stable softmax to `predictions` first (default False).
Returns:
    dict with keys accuracy, f1, nll, brier, ece, adaptive_ece, mce, auroc_error, auprc_error, aurc.
    auroc_error / auprc_error are NaN when all predictions are correct or all are wrong.
Examples:
    >>> m = evaluate.load(bayesian_hf.metrics.evaluate_module_path())
    >>> m.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["accuracy"]
    1.0
"""

_CITATION = """
@inproceedings{guo2017calibration,
  title={On Calibration of Modern Neural Networks},
  author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.},
  booktitle={ICML}, year={2017}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UncertaintyMetrics(evaluate.Metric):
    """``evaluate`` wrapper around ``bayesian_hf.metrics.classification_metrics``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1706.04599"],
        )

    def _compute(self, predictions, references, uncertainty=None, n_bins=15, from_logits=False):
        probs = np.asarray(predictions, dtype=np.float64)
        if from_logits:
            probs = softmax(probs)
        out = classification_metrics(probs, np.asarray(references), uncertainty=uncertainty, n_bins=int(n_bins))
        return {k: out[k] for k in CLASSIFICATION_METRIC_KEYS}
