"""Evaluation: quality against real data, fidelity to a teacher, and cost.

``evaluate(model, teacher=..., n=10000)`` returns an :class:`EvalResult`; ``fid_score`` is
the fast FID used for checkpoint selection while fine-tuning.
"""

from slimgen.evaluate.api import EvalResult, check_compatible, evaluate, fid_score
from slimgen.evaluate.cost import (
    Cost,
    count_macs,
    count_nonzero_params,
    count_params,
    measure_cost,
    median_latency_ms,
    onnx_latency_ms,
    stored_bytes,
    torch_latency_ms,
)
from slimgen.evaluate.features import (
    ClassifierFeatures,
    FeatureExtractor,
    Features,
    InceptionFeatures,
    extract,
    load_extractor,
    load_inception,
)
from slimgen.evaluate.fidelity import Fidelity, measure_fidelity
from slimgen.evaluate.quality import (
    Quality,
    class_histogram,
    fid,
    inception_score,
    kid,
    measure_quality,
    precision_recall,
)
from slimgen.evaluate.reference import Reference, reference_features

__all__ = [
    "ClassifierFeatures", "Cost", "EvalResult", "FeatureExtractor", "Features", "Fidelity", "InceptionFeatures",
    "Quality", "Reference", "check_compatible", "class_histogram", "count_macs", "count_nonzero_params",
    "count_params", "evaluate", "extract", "fid", "fid_score", "inception_score", "kid", "load_extractor",
    "load_inception", "measure_cost", "measure_fidelity", "measure_quality", "median_latency_ms", "onnx_latency_ms",
    "precision_recall", "reference_features", "stored_bytes", "torch_latency_ms",
]
