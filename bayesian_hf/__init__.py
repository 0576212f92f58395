"""bayesian_hf: BERT classifiers that are Bayesian in expectation over orderings of their exchangeable units.

Importing the package registers the configuration and models with the ``transformers`` Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_bayesian_expectation import BayesianExpectationConfig
from .losses import mdl_loss
from .modeling_bayesian_expectation import (
    BayesianExpectationForSequenceClassification,
    BayesianExpectationLayer,
    BayesianExpectationModel,
    BayesianExpectationModelOutput,
    BayesianSequenceClassifierOutput,
)
from .orderings import sample_orderings
from .pipelines import UncertaintyClassificationPipeline, predict, register_pipeline
from .tokenization import tokenize_with_units
from .uncertainty import dirichlet_uncertainty
from .version import __version__

from_bert = BayesianExpectationForSequenceClassification.from_bert  # conversion.from_bert building this class


AutoConfig.register(BayesianExpectationConfig.model_type, BayesianExpectationConfig, exist_ok=True)
AutoModel.register(BayesianExpectationConfig, BayesianExpectationModel, exist_ok=True)
AutoModelForSequenceClassification.register(
    BayesianExpectationConfig, BayesianExpectationForSequenceClassification, exist_ok=True
)
# save_pretrained copies the modeling code and writes auto_map, so saved models load with trust_remote_code=True
BayesianExpectationConfig.register_for_auto_class()
BayesianExpectationModel.register_for_auto_class("AutoModel")
BayesianExpectationForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
register_pipeline()

__all__ = [
    "BayesianExpectationConfig",
    "BayesianExpectationForSequenceClassification",
    "BayesianExpectationLayer",
    "BayesianExpectationModel",
    "BayesianExpectationModelOutput",
    "BayesianSequenceClassifierOutput",
    "UncertaintyClassificationPipeline",
    "__version__",
    "dirichlet_uncertainty",
    "from_bert",
    "mdl_loss",
    "predict",
    "sample_orderings",
    "tokenize_with_units",
]
