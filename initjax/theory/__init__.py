"""Mean-field theory of signal propagation at initialization: what the engine is compared with.

Three modules, one entry point:

* :mod:`initjax.theory.meanfield`: plain fully connected networks (Poole et al. 2016, Schoenholz
  et al. 2017): Gaussian quadrature, the variance and correlation maps, their fixed points and
  depth scales, chi_1, the critical line, Jacobian spectra, the batch-norm gradient rate, and
  :func:`~initjax.theory.meanfield.predict` for a :class:`~initjax.config.NetworkConfig`;
* :mod:`initjax.theory.residual`: residual networks (Yang & Schoenholz 2017, De & Smith 2020,
  NF-ResNets, the 1/sqrt(depth) limit): :func:`~initjax.theory.residual.predict_residual` for any
  :class:`~initjax.network.Network` of Dense and Residual blocks;
* :mod:`initjax.theory.attention`: transformers with uniform attention at init (Xiong et al.
  2020's zero queries and keys): :func:`~initjax.theory.attention.predict_attention` for a
  Network with a token axis, exact in the number of tokens.

:func:`predict` takes any of them and sends it where it belongs. Every public name of the modules is
available here (``initjax.theory.variance_map``, ``initjax.theory.predict_residual``, ...).

>>> from initjax.network import Network
>>> predict(Network.residual_mlp(4, 256, norm="batch")).q.round(3)  # De & Smith: 1 + l
array([2., 3., 4., 5.])
"""

from __future__ import annotations

from typing import Any

from initjax.network import Network
from initjax.theory.attention import AttentionPrediction as AttentionPrediction
from initjax.theory.attention import predict_attention as predict_attention
from initjax.theory.attention import uniform_attention_matrix as uniform_attention_matrix
from initjax.theory.attention import xiong_bounds as xiong_bounds
from initjax.theory.attention import xiong_network as xiong_network
from initjax.theory.meanfield import DEFAULT_ITERATIONS as DEFAULT_ITERATIONS
from initjax.theory.meanfield import DEFAULT_NUM as DEFAULT_NUM
from initjax.theory.meanfield import DEFAULT_NUM_2D as DEFAULT_NUM_2D
from initjax.theory.meanfield import MAX_DEPTH as MAX_DEPTH
from initjax.theory.meanfield import DepthScales as DepthScales
from initjax.theory.meanfield import Prediction as Prediction
from initjax.theory.meanfield import batchnorm_gradient_rate as batchnorm_gradient_rate
from initjax.theory.meanfield import chi_1 as chi_1
from initjax.theory.meanfield import correlation_iterates as correlation_iterates
from initjax.theory.meanfield import correlation_map as correlation_map
from initjax.theory.meanfield import critical_line as critical_line
from initjax.theory.meanfield import depth_scales as depth_scales
from initjax.theory.meanfield import erf_correlation_map as erf_correlation_map
from initjax.theory.meanfield import erf_variance_map as erf_variance_map
from initjax.theory.meanfield import fixed_point_c as fixed_point_c
from initjax.theory.meanfield import fixed_point_q as fixed_point_q
from initjax.theory.meanfield import gaussian_expectation as gaussian_expectation
from initjax.theory.meanfield import gaussian_expectation_2d as gaussian_expectation_2d
from initjax.theory.meanfield import gaussian_product_moments as gaussian_product_moments
from initjax.theory.meanfield import glorot_recursion as glorot_recursion
from initjax.theory.meanfield import gradient_factors as gradient_factors
from initjax.theory.meanfield import gradient_scale as gradient_scale
from initjax.theory.meanfield import he_recursion as he_recursion
from initjax.theory.meanfield import jacobian_singular_values as jacobian_singular_values
from initjax.theory.meanfield import leaky_relu_correlation_map as leaky_relu_correlation_map
from initjax.theory.meanfield import leaky_relu_variance_map as leaky_relu_variance_map
from initjax.theory.meanfield import linear_correlation_map as linear_correlation_map
from initjax.theory.meanfield import linear_variance_map as linear_variance_map
from initjax.theory.meanfield import predict as predict_plain
from initjax.theory.meanfield import preserving_sigma_w2 as preserving_sigma_w2
from initjax.theory.meanfield import relu_batchnorm_gradient_rate as relu_batchnorm_gradient_rate
from initjax.theory.meanfield import relu_correlation_map as relu_correlation_map
from initjax.theory.meanfield import relu_variance_map as relu_variance_map
from initjax.theory.meanfield import variance_iterates as variance_iterates
from initjax.theory.meanfield import variance_map as variance_map
from initjax.theory.residual import DepthLimit as DepthLimit
from initjax.theory.residual import ResidualPrediction as ResidualPrediction
from initjax.theory.residual import YangSchoenholz as YangSchoenholz
from initjax.theory.residual import de_smith_variance as de_smith_variance
from initjax.theory.residual import predict_residual as predict_residual
from initjax.theory.residual import residual_depth_limit as residual_depth_limit
from initjax.theory.residual import yang_schoenholz as yang_schoenholz

__all__ = [
    "AttentionPrediction",
    "DEFAULT_ITERATIONS",
    "DEFAULT_NUM",
    "DEFAULT_NUM_2D",
    "DepthLimit",
    "DepthScales",
    "MAX_DEPTH",
    "Prediction",
    "ResidualPrediction",
    "YangSchoenholz",
    "batchnorm_gradient_rate",
    "chi_1",
    "correlation_iterates",
    "correlation_map",
    "critical_line",
    "de_smith_variance",
    "depth_scales",
    "erf_correlation_map",
    "erf_variance_map",
    "fixed_point_c",
    "fixed_point_q",
    "gaussian_expectation",
    "gaussian_expectation_2d",
    "gaussian_product_moments",
    "glorot_recursion",
    "gradient_factors",
    "gradient_scale",
    "he_recursion",
    "jacobian_singular_values",
    "leaky_relu_correlation_map",
    "leaky_relu_variance_map",
    "linear_correlation_map",
    "linear_variance_map",
    "predict",
    "predict_attention",
    "predict_plain",
    "predict_residual",
    "preserving_sigma_w2",
    "relu_batchnorm_gradient_rate",
    "relu_correlation_map",
    "relu_variance_map",
    "residual_depth_limit",
    "uniform_attention_matrix",
    "variance_iterates",
    "variance_map",
    "xiong_bounds",
    "xiong_network",
    "yang_schoenholz",
]


def predict(config: Any, *, num: int = DEFAULT_NUM,
            num_2d: tuple[int, int] = DEFAULT_NUM_2D) -> Prediction | ResidualPrediction | AttentionPrediction:
    """The mean-field prediction for the network that :func:`initjax.propagate` samples.

    A :class:`~initjax.config.NetworkConfig` or a plain :class:`~initjax.network.Network` (a stack of
    Dense layers) gets :func:`~initjax.theory.meanfield.predict`'s per-layer :class:`Prediction`;
    any other Network (residual blocks, pre-activation or weight-standardized layers) gets
    :func:`~initjax.theory.residual.predict_residual`'s per-block :class:`ResidualPrediction`
    (stream second moment ``q``, mean, cosine, branch variance and share, gradient second moment);
    a Network with a token axis (transformers) gets
    :func:`~initjax.theory.attention.predict_attention`'s :class:`AttentionPrediction` (uniform
    attention at init: zero query/key weights, logit scale 0, or the wide limit of ``1/d_head``).

    Raises:
      ValueError: as the two predictors do (a normalized plain network, an initializer whose
        second moment is unknown, ...).
    """
    if isinstance(config, Network) and config.tokens is not None:
        return predict_attention(config, num=num, num_2d=num_2d)
    if isinstance(config, Network) and not config.is_plain:
        return predict_residual(config, num=num, num_2d=num_2d)
    return predict_plain(config, num=num, num_2d=num_2d)
