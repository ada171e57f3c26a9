"""Seed A's scheme: store a downscaled image losslessly, predict the original by upscaling it,
and (in bounded mode) correct the prediction with a quantized residual."""
