"""cmopt: critical-momenta optimizers (Adam+CM, Adam+CG, SGD+CM), SAM, and flatness measures. Torch only."""

from cmopt.adam_cg import AdamCG
from cmopt.adam_cm import AdamCM
from cmopt.buffer import CriticalBuffer, DeviceBuffer, HostBuffer
from cmopt.compile import compile_optimizer
from cmopt.critical import CriticalOptimizer
from cmopt.diagnostics import critical_buffer_stats, optimizer_state_bytes, squared_distance, weights_copy
from cmopt.flatness import (average_sharpness, epsilon_sharpness, hessian_trace, hessian_vector_product,
                            parameter_distance, top_hessian_eigenvalue, top_hessian_eigenvalues)
from cmopt.registry import OPTIMIZER_NAMES, create_optimizer
from cmopt._norm import frozen_norm_statistics
from cmopt.sam import SAM, sam_step
from cmopt.sgd_cm import SGDCM

__all__ = [
    "AdamCG", "AdamCM", "CriticalBuffer", "CriticalOptimizer", "DeviceBuffer", "HostBuffer", "OPTIMIZER_NAMES", "SAM", "SGDCM", "compile_optimizer", "create_optimizer",
    "critical_buffer_stats", "frozen_norm_statistics", "hessian_trace", "hessian_vector_product",
    "optimizer_state_bytes", "sam_step", "top_hessian_eigenvalue", "top_hessian_eigenvalues", "epsilon_sharpness",
    "average_sharpness", "parameter_distance", "squared_distance", "weights_copy",
]
__version__ = "0.2.0"
