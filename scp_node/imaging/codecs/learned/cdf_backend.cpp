// CDFs of the discretized Gaussian mixtures, for torchac (entropy.py's `_cdf` describes the
// arithmetic), one value at a time. Without escape (the four candidates of a block's last
// sub-pixel), the window's bins are renormalised to carry all the mass. Torch ops over
// (values, components, bins) tensors spend most of a decode moving int64 temporaries through
// memory; this loop keeps them in registers. Results are identical by construction (integer
// operations only) and tests/test_learned_entropy.py checks them against a torch implementation.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <vector>

torch::Tensor build_cdf(torch::Tensor mean, torch::Tensor inverse, torch::Tensor weight,
                        torch::Tensor centre, torch::Tensor low_bits, torch::Tensor phi,
                        int64_t half_window, int64_t max_value, int64_t mean_frac_bits,
                        int64_t inverse_shift,
                        int64_t z_offset, int64_t total, int64_t cdf_total, bool with_escape) {
  TORCH_CHECK(mean.dtype() == torch::kInt64 && inverse.dtype() == torch::kInt64 &&
                  weight.dtype() == torch::kInt64 && centre.dtype() == torch::kInt64 &&
                  low_bits.dtype() == torch::kInt64 && phi.dtype() == torch::kInt64,
              "build_cdf takes int64 tensors");
  mean = mean.contiguous();
  inverse = inverse.contiguous();
  weight = weight.contiguous();
  centre = centre.contiguous();
  low_bits = low_bits.contiguous();
  phi = phi.contiguous();
  const int64_t n = mean.size(0), k = mean.size(1);
  const int64_t edges = 2 * half_window + 1;
  const int64_t symbols = 2 * half_window + 1;  // bins and the escape symbol
  const int64_t z_max_index = phi.size(0) - 1;
  auto cdf = torch::empty({n, symbols + 1}, torch::kInt16);
  const int64_t* m = mean.data_ptr<int64_t>();
  const int64_t* inv = inverse.data_ptr<int64_t>();
  const int64_t* w = weight.data_ptr<int64_t>();
  const int64_t* c = centre.data_ptr<int64_t>();
  const int64_t* b = low_bits.data_ptr<int64_t>();
  const int64_t* table = phi.data_ptr<int64_t>();
  int16_t* out = cdf.data_ptr<int16_t>();
  const int64_t half = int64_t{1} << (mean_frac_bits - 1);
  // Rows are independent: split them over torch's intra-op threads (same result for any count).
  at::parallel_for(0, n, 256, [&](int64_t first, int64_t last) {
    std::vector<int64_t> below(edges);
    for (int64_t row = first; row < last; ++row) {
      for (int64_t e = 0; e < edges; ++e) {
        const int64_t step = e - half_window;
        const int64_t first_value = c[row] + step * (int64_t{1} << b[row]);  // edge = first - 1/2
        if (first_value <= 0 || first_value > max_value) {  // tails belong to the end values
          below[e] = first_value <= 0 ? 0 : total;
          continue;
        }
        const int64_t edge = (first_value << mean_frac_bits) - half;
        int64_t mass = 0;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t offset = edge - m[row * k + j];
          // >> on a negative int64 is an arithmetic shift (C++20): floor division, as torch.div.
          const int64_t z = (offset * inv[row * k + j]) >> inverse_shift;
          const int64_t index = std::clamp<int64_t>(z + z_offset, 0, z_max_index);
          mass += table[index] * w[row * k + j];
        }
        below[e] = mass;
      }
      int16_t* row_out = out + row * (symbols + 1);
      int64_t running = 0;
      row_out[0] = 0;
      // Without escape, the window holds every possible value: its bins share all the mass.
      const int64_t span = with_escape ? total : std::max<int64_t>(below[edges - 1] - below[0], 1);
      for (int64_t s = 0; s < symbols; ++s) {
        const int64_t outside = with_escape ? below[0] + (total - below[edges - 1]) : 0;
        const int64_t bin = s < symbols - 1 ? below[s + 1] - below[s] : outside;
        running += 1 + (bin * (cdf_total - symbols)) / span;  // bin >= 0: truncation is floor
        row_out[s + 1] = static_cast<int16_t>(static_cast<uint16_t>(std::min(running, cdf_total - 1)));
      }
    }
  });
  return cdf;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("build_cdf", &build_cdf, "integer mixture CDFs for torchac");
}
