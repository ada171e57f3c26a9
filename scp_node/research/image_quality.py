"""Full-reference image quality for lossy codecs: PSNR, SSIM and FSIM at the image's bit depth.

Implemented here with torch and numpy, because the usual packages (piq, torchmetrics' image
metrics, pytorch-msssim) pull torchvision and a CUDA torch.
- SSIM: Wang et al. 2004. Gaussian window 11 x 11 with sigma 1.5, K1 0.01, K2 0.03, and the
  dynamic range is the bit depth's.
- FSIM: Zhang et al. 2011, grayscale.
  - Phase congruency from log-Gabor filters: 4 scales (minimum wavelength 6, factor 2),
    4 orientations, sigma_f 0.55, angular sigma pi/8, noise threshold from the smallest
    scale's median response, k 2.
  - Gradient magnitude from Scharr kernels; T1 0.85, T2 160 for 8-bit data, scaled with the
    squared range.
  - Images are downsampled by max(1, round(min side / 256)), as in the authors' code.
All metrics take one plane (rows, columns); colour and frames are averaged by the caller.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
FSIM_SCALES, FSIM_ORIENTATIONS = 4, 4
FSIM_MIN_WAVELENGTH, FSIM_MULTIPLIER = 6, 2
FSIM_SIGMA_ON_F, FSIM_ANGULAR_SIGMA = 0.55, math.pi / 8
FSIM_K, FSIM_EPSILON = 2.0, 1e-4
FSIM_T1, FSIM_T2_8BIT = 0.85, 160.0


def psnr(reference: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    """In dB; infinite for identical planes."""
    error = reference.astype(np.float64) - test.astype(np.float64)
    mse = float(np.mean(error**2))
    peak = float((1 << bit_depth) - 1)
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def ssim(reference: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    peak = float((1 << bit_depth) - 1)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    x, y = _tensor(reference), _tensor(test)
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    mean_x, mean_y = _filter(x, window), _filter(y, window)
    var_x = _filter(x * x, window) - mean_x**2
    var_y = _filter(y * y, window) - mean_y**2
    covariance = _filter(x * y, window) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())


def fsim(reference: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    factor = max(1, round(min(reference.shape) / 256))
    x = _downsample(_tensor(reference), factor)
    y = _downsample(_tensor(test), factor)
    pc_x, pc_y = _phase_congruency(x), _phase_congruency(y)
    gradient_x, gradient_y = _gradient_magnitude(x), _gradient_magnitude(y)
    t2 = FSIM_T2_8BIT * ((1 << bit_depth) - 1) ** 2 / 255**2
    similarity_pc = (2 * pc_x * pc_y + FSIM_T1) / (pc_x**2 + pc_y**2 + FSIM_T1)
    similarity_g = (2 * gradient_x * gradient_y + t2) / (gradient_x**2 + gradient_y**2 + t2)
    weight = torch.maximum(pc_x, pc_y)
    total = float(weight.sum())
    return 1.0 if total == 0 else float((similarity_pc * similarity_g * weight).sum()) / total


def _tensor(plane: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float64))[None, None]


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    window = torch.outer(line, line)
    return (window / window.sum())[None, None]


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """'valid' filtering, as the reference SSIM: no padding artefacts at the borders."""
    return functional.conv2d(x, window)


def _downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return x
    return functional.avg_pool2d(x, factor, stride=factor)


def _gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    scharr = torch.tensor([[3.0, 0, -3.0], [10.0, 0, -10.0], [3.0, 0, -3.0]], dtype=torch.float64) / 16
    padded = functional.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = functional.conv2d(padded, scharr[None, None])
    dy = functional.conv2d(padded, scharr.T[None, None])
    return torch.sqrt(dx**2 + dy**2)[0, 0]


def _phase_congruency(x: torch.Tensor) -> torch.Tensor:
    """Kovesi's phase congruency (summed over orientations), from log-Gabor filters in the
    frequency domain."""
    image = x[0, 0]
    rows, columns = image.shape
    spectrum = torch.fft.fft2(image)
    fy = torch.fft.fftfreq(rows, dtype=torch.float64)[:, None].expand(rows, columns)
    fx = torch.fft.fftfreq(columns, dtype=torch.float64)[None, :].expand(rows, columns)
    radius = torch.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0  # the DC term is removed by the log-Gabor's zero there
    theta = torch.atan2(-fy, fx)
    lowpass = 1 / (1 + (radius / 0.45) ** 30)
    energy_total = torch.zeros_like(image)
    amplitude_total = torch.zeros_like(image)
    for orientation in range(FSIM_ORIENTATIONS):
        angle = orientation * math.pi / FSIM_ORIENTATIONS
        difference = torch.atan2(
            torch.sin(theta) * math.cos(angle) - torch.cos(theta) * math.sin(angle),
            torch.cos(theta) * math.cos(angle) + torch.sin(theta) * math.sin(angle),
        )
        spread = torch.exp(-(difference**2) / (2 * FSIM_ANGULAR_SIGMA**2))
        sum_even = torch.zeros_like(image)
        sum_odd = torch.zeros_like(image)
        sum_amplitude = torch.zeros_like(image)
        noise_threshold = None
        for scale in range(FSIM_SCALES):
            wavelength = FSIM_MIN_WAVELENGTH * FSIM_MULTIPLIER**scale
            log_gabor = torch.exp(
                -(torch.log(radius * wavelength) ** 2) / (2 * math.log(FSIM_SIGMA_ON_F) ** 2)
            )
            log_gabor = log_gabor * lowpass
            log_gabor[0, 0] = 0.0
            response = torch.fft.ifft2(spectrum * log_gabor * spread)
            amplitude = response.abs()
            sum_even += response.real
            sum_odd += response.imag
            sum_amplitude += amplitude
            if scale == 0:
                # Rayleigh noise model from the median of the smallest scale's amplitude.
                tau = float(amplitude.median()) / math.sqrt(math.log(4))
                noise_threshold = _noise_threshold(tau, scale_count=FSIM_SCALES)
        energy = torch.sqrt(sum_even**2 + sum_odd**2)
        energy_total += (energy - noise_threshold).clamp_min(0)
        amplitude_total += sum_amplitude
    return energy_total / (amplitude_total + FSIM_EPSILON)


def _noise_threshold(tau: float, scale_count: int) -> float:
    """Expected noise energy plus FSIM_K standard deviations (Kovesi), summed over scales."""
    total_tau = tau * (1 - (1 / FSIM_MULTIPLIER) ** scale_count) / (1 - 1 / FSIM_MULTIPLIER)
    mean = total_tau * math.sqrt(math.pi / 2)
    sigma = total_tau * math.sqrt((4 - math.pi) / 2)
    return mean + FSIM_K * sigma
