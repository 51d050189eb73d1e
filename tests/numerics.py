"""How far a float32 result may sit from its float64 reference (imported by the tests).

Two kinds of numerical check are in this suite:

* Equations (Eq. 1, Eq. 2, the losses, ...) are checked in float64 on both sides. Rounding is
  ~1e-16 relative there, so torch's default float64 tolerance (rtol = atol = 1e-7) is reached
  only by a wrong formula, whatever the CPU or the library versions.
* Things that exist only in float32 (an ONNX graph run by onnxruntime, an exported model) are
  compared with the same model run in float64, and their error is bounded by
  :func:`float32_tolerance`, derived from float32's epsilon, the magnitude of the output and
  the depth of the computation, not from what one machine happened to print.
"""

import math

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23 ≈ 1.19e-7: the spacing of float32 numbers at 1


def float32_tolerance(reference: torch.Tensor, layers: int, fan_in: int) -> float:
    """Largest absolute error a float32 forward pass may have, against a float64 ``reference``.

    Each of the ``layers`` layers on the longest path (conv or linear, then BN, ReLU, pooling)
    sums up to ``fan_in`` products. Blocked or pairwise summation, as oneDNN, MKL, MLAS and
    Eigen do it, errs by about log2(fan_in) eps relative to the size of the values it adds,
    and the errors of successive layers add up. Taking the output's largest magnitude as the
    size of the values gives

        tol = layers x ceil(log2(fan_in)) x eps32 x max|reference|

    (the errors measured on the development machine, 5-6 eps x max|reference| for ResNet-18 with
    the RRID heads, sit about 50 times below it; a wrong stripe or a missing ReLU changes the
    output by more than 10 % of max|reference|, 1,000 times above it).
    """
    return layers * math.ceil(math.log2(fan_in)) * EPS32 * reference.abs().max().item()


# ResNet-18 with the RRID heads (the quick-mode model): 17 convolutions on the backbone's longest
# path plus the reduction and R_p / R_g of a head; the largest sum is a 3 x 3 conv over 512 channels.
RESNET18_RRID = dict(layers=17 + 2, fan_in=3 * 3 * 512)


def max_abs_diff(a, b) -> float:
    return (torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max().item()
