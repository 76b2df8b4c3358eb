#include "trainer/model/batch_norm_relu.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace tempered {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// In channels_last a (N, C, H, W) tensor is a row-major (M = N H W, C) matrix: every loop below runs over rows and,
// innermost, over the C contiguous channels (vectorised by the compiler). Partial sums are taken in the arithmetic
// type (below) over blocks of kBlockRows rows and added into double totals: rounding stays ~1e-7 relative for
// millions of rows.
constexpr int64_t kBlockRows = 64;

// The arithmetic type for activations of type T (LibTorch's opmath type): bf16 (autocast's conv outputs) is read
// into float and the result rounded back to bf16 once, as LibTorch's own bf16 kernels do; float and double compute
// in themselves.
template <typename T>
using Acc = at::opmath_type<T>;

// The four loops below are also compiled for AVX-512 (x86-64-v4) and the loader picks the clone the CPU runs
// (GCC's target_clones; clang does not clone templates yet): ~10% of a bf16 training step here over the default
// (SSE2) build, nothing in fp32, whose passes are bound by memory. The clone contracts to FMA, so the last bits
// differ between CPUs with and without AVX-512, as oneDNN's conv results already do.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TEMPERED_AVX512_CLONE __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define TEMPERED_AVX512_CLONE
#endif

// Reads and writes of activations. The bf16 ones are written on the raw bits (c10::BFloat16's conversions branch on
// NaN and keep the loops scalar): a float is the bf16 bits shifted up; a float rounds to the nearest even bf16, and
// a NaN stays a (quiet) NaN.
template <typename T>
T Load(const T& v) {
  return v;
}
inline float Load(const c10::BFloat16& v) {
  const uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <typename T>
void Store(T& out, T v) {
  out = v;
}
inline void Store(c10::BFloat16& out, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  out.x = static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
}

// The rows [begin, end) of chunk k of `chunks` (threads each take whole chunks; the chunking, and so the rounding,
// depends only on M and the thread count).
std::pair<int64_t, int64_t> ChunkRows(int64_t rows, int64_t chunks, int64_t k) {
  return {rows * k / chunks, rows * (k + 1) / chunks};
}

// Per-channel sums over the chunks, in parallel: body(begin, end, partial) adds rows [begin, end) into `partial`
// (width doubles, zeroed); returns the totals (width).
template <typename Body>
std::vector<double> ParallelChannelSums(int64_t rows, int64_t width, const Body& body) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / kBlockRows));
  std::vector<double> partial(chunks * width, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      const auto [begin, end] = ChunkRows(rows, chunks, k);
      body(begin, end, partial.data() + k * width);
    }
  });
  std::vector<double> total(width, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t c = 0; c < width; ++c) total[c] += partial[k * width + c];
  }
  return total;
}

// Rows [begin, end) of x (M, C): sum (x - shift) and sum (x - shift)^2 per channel, added into out[0, C) and
// out[C, 2C). The shift (the first row) keeps the one-pass variance E[d^2] - E[d]^2 free of cancellation.
template <typename T, typename A = Acc<T>>
TEMPERED_AVX512_CLONE
void ShiftedSums(const T* __restrict__ x, int64_t begin, int64_t end, int64_t channels, const A* __restrict__ shift,
                 double* __restrict__ out) {
  std::vector<A> sum(channels), sum_sq(channels);
  for (int64_t block = begin; block < end; block += kBlockRows) {
    std::fill(sum.begin(), sum.end(), A(0));
    std::fill(sum_sq.begin(), sum_sq.end(), A(0));
    A* __restrict__ s = sum.data();
    A* __restrict__ q = sum_sq.data();
    for (int64_t r = block; r < std::min(end, block + kBlockRows); ++r) {
      const T* __restrict__ row = x + r * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const A d = Load(row[c]) - shift[c];
        s[c] += d;
        q[c] += d * d;
      }
    }
    for (int64_t c = 0; c < channels; ++c) out[c] += s[c], out[channels + c] += q[c];
  }
}

// Backward sums over rows [begin, end): g = dy where y > 0 (ReLU's mask, as threshold_backward: y <= 0 stops it);
// sum g and sum g (x - mean) per channel, added into out[0, C) and out[C, 2C).
template <typename T, typename A = Acc<T>>
TEMPERED_AVX512_CLONE
void GradSums(const T* __restrict__ dy, const T* __restrict__ y, const T* __restrict__ x, int64_t begin, int64_t end,
              int64_t channels, const A* __restrict__ mean, double* __restrict__ out) {
  std::vector<A> sum(channels), sum_x(channels);
  for (int64_t block = begin; block < end; block += kBlockRows) {
    std::fill(sum.begin(), sum.end(), A(0));
    std::fill(sum_x.begin(), sum_x.end(), A(0));
    A* __restrict__ s = sum.data();
    A* __restrict__ sx = sum_x.data();
    for (int64_t r = block; r < std::min(end, block + kBlockRows); ++r) {
      const int64_t o = r * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const A d = Load(dy[o + c]);  // loaded unconditionally: a conditional load keeps the loop scalar
        const A g = Load(y[o + c]) <= A(0) ? A(0) : d;
        s[c] += g;
        sx[c] += g * (Load(x[o + c]) - mean[c]);
      }
    }
    for (int64_t c = 0; c < channels; ++c) out[c] += s[c], out[channels + c] += sx[c];
  }
}

// y = max(0, scale x + offset) over n elements of whole rows. A function of its own with restrict pointers, so
// that the compiler may vectorise it (pointers captured by a lambda may alias the stores).
template <typename T, typename A = Acc<T>>
TEMPERED_AVX512_CLONE
void ScaleShiftRelu(const T* __restrict__ x, int64_t n, int64_t channels, const A* __restrict__ scale,
                    const A* __restrict__ offset, T* __restrict__ y) {
  for (int64_t o = 0; o < n; o += channels) {
    for (int64_t c = 0; c < channels; ++c) {
      const A v = Load(x[o + c]) * scale[c] + offset[c];
      Store(y[o + c], v < A(0) ? A(0) : v);  // NaN stays NaN, as torch::relu
    }
  }
}

// dx = a g + b (x - mean) + k per channel, g = dy masked by y > 0, over n elements of whole rows.
template <typename T, typename A = Acc<T>>
TEMPERED_AVX512_CLONE
void InputGrad(const T* __restrict__ dy, const T* __restrict__ y, const T* __restrict__ x, int64_t n, int64_t channels,
               const A* __restrict__ a, const A* __restrict__ b, const A* __restrict__ k, const A* __restrict__ mean,
               T* __restrict__ dx) {
  for (int64_t o = 0; o < n; o += channels) {
    for (int64_t c = 0; c < channels; ++c) {
      const A d = Load(dy[o + c]);
      const A g = Load(y[o + c]) <= A(0) ? A(0) : d;
      Store(dx[o + c], a[c] * g + b[c] * (Load(x[o + c]) - mean[c]) + k[c]);
    }
  }
}

// Elementwise pass over all rows in parallel: body(begin, end) handles rows [begin, end).
template <typename Body>
void ParallelRows(int64_t rows, const Body& body) {
  at::parallel_for(0, rows, 4 * kBlockRows, body);
}

std::vector<double> ToVector(const Tensor& t) {
  const Tensor d = t.detach().to(torch::kDouble).contiguous();
  return {d.data_ptr<double>(), d.data_ptr<double>() + d.numel()};
}

template <typename T>
std::vector<T> Cast(const std::vector<double>& v) {
  return {v.begin(), v.end()};
}

// Forward: batch statistics (one pass), then y = max(0, scale x + offset) (one pass). Returns y, mean, invstd, var.
template <typename T>
std::tuple<Tensor, std::vector<double>, std::vector<double>, std::vector<double>> Forward(
    const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const int64_t channels = x.size(1), rows = x.numel() / channels;
  using A = Acc<T>;
  const T* px = x.data_ptr<T>();
  const std::vector<A> shift(px, px + channels);
  const std::vector<double> sums = ParallelChannelSums(rows, 2 * channels, [&](int64_t b, int64_t e, double* out) {
    ShiftedSums<T>(px, b, e, channels, shift.data(), out);
  });
  std::vector<double> mean(channels), invstd(channels), var(channels);
  const std::vector<double> w = ToVector(weight), bi = ToVector(bias);
  std::vector<A> scale(channels), offset(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double d = sums[c] / rows;
    var[c] = std::max(0.0, sums[channels + c] / rows - d * d);  // biased
    mean[c] = static_cast<double>(shift[c]) + d;
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    scale[c] = static_cast<A>(w[c] * invstd[c]);
    offset[c] = static_cast<A>(bi[c] - mean[c] * w[c] * invstd[c]);
  }
  Tensor y = torch::empty_like(x);
  T* py = y.data_ptr<T>();
  ParallelRows(rows, [&](int64_t begin, int64_t end) {
    ScaleShiftRelu<T>(px + begin * channels, (end - begin) * channels, channels, scale.data(), offset.data(),
                      py + begin * channels);
  });
  return {y, mean, invstd, var};
}

// Backward. With g = dy masked by y > 0, xhat = (x - mean) invstd and means over the M rows:
//   dbias = sum g,  dweight = sum g xhat,  dx = weight invstd (g - mean(g) - xhat mean(g xhat)).
template <typename T>
tensor_list Backward(const Tensor& dy, const Tensor& y, const Tensor& x, const Tensor& weight,
                     const std::vector<double>& mean, const std::vector<double>& invstd) {
  const int64_t channels = x.size(1), rows = x.numel() / channels;
  using A = Acc<T>;
  const T *pdy = dy.data_ptr<T>(), *py = y.data_ptr<T>(), *px = x.data_ptr<T>();
  const std::vector<A> mean_t = Cast<A>(mean);
  const std::vector<double> sums = ParallelChannelSums(rows, 2 * channels, [&](int64_t b, int64_t e, double* out) {
    GradSums<T>(pdy, py, px, b, e, channels, mean_t.data(), out);
  });
  const std::vector<double> w = ToVector(weight);
  std::vector<double> dweight(channels), dbias(channels);
  // dx = a g + b (x - mean) + k per channel.
  std::vector<A> a(channels), b(channels), k(channels);
  for (int64_t c = 0; c < channels; ++c) {
    dbias[c] = sums[c];
    dweight[c] = sums[channels + c] * invstd[c];
    a[c] = static_cast<A>(w[c] * invstd[c]);
    b[c] = static_cast<A>(-w[c] * invstd[c] * invstd[c] * invstd[c] * sums[channels + c] / rows);
    k[c] = static_cast<A>(-w[c] * invstd[c] * sums[c] / rows);
  }
  Tensor dx = torch::empty_like(x);
  T* pdx = dx.data_ptr<T>();
  ParallelRows(rows, [&](int64_t begin, int64_t end) {
    const int64_t o = begin * channels;
    InputGrad<T>(pdy + o, py + o, px + o, (end - begin) * channels, channels, a.data(), b.data(), k.data(),
                 mean_t.data(), pdx + o);
  });
  const auto options = weight.options();
  return {dx, torch::tensor(dweight, torch::kDouble).to(options), torch::tensor(dbias, torch::kDouble).to(options)};
}

class BatchNormReluFunction : public torch::autograd::Function<BatchNormReluFunction> {
 public:
  // running_mean and running_var are updated in place; they and the options get no gradient.
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight, const Tensor& bias,
                        Tensor running_mean, Tensor running_var, double momentum, double eps) {
    const Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
    Tensor y;
    std::vector<double> mean, invstd, var;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "BatchNormRelu", [&] {
      std::tie(y, mean, invstd, var) = Forward<scalar_t>(x, weight, bias, eps);
    });
    const double rows = static_cast<double>(x.numel() / x.size(1));
    const auto stat = [&](const std::vector<double>& v) {
      return torch::tensor(v, torch::kDouble).to(running_mean.options());
    };
    running_mean.mul_(1 - momentum).add_(stat(mean), momentum);
    running_var.mul_(1 - momentum).add_(stat(var) * (rows / (rows - 1)), momentum);  // unbiased, as BatchNorm2d
    ctx->save_for_backward({x, y, weight});
    ctx->saved_data["mean"] = torch::tensor(mean, torch::kDouble);
    ctx->saved_data["invstd"] = torch::tensor(invstd, torch::kDouble);
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &y = saved[1], &weight = saved[2];
    const Tensor dy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    const std::vector<double> mean = ToVector(ctx->saved_data["mean"].toTensor());
    const std::vector<double> invstd = ToVector(ctx->saved_data["invstd"].toTensor());
    tensor_list out;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "BatchNormReluBackward", [&] {
      out = Backward<scalar_t>(dy, y, x, weight, mean, invstd);
    });
    return {out[0], out[1], out[2], Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

bool BatchNormReluSupports(const Tensor& x) {
  const bool floating = x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble ||
                        x.scalar_type() == torch::kBFloat16;
  return x.dim() == 4 && x.device().is_cpu() && floating && x.size(1) > 0 && x.numel() / x.size(1) >= 2;
}

Tensor BatchNormReluTraining(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                             Tensor& running_var, const BatchNormReluOptions& options) {
  TORCH_CHECK(BatchNormReluSupports(x), "BatchNormReluTraining: unsupported input ", x.sizes(), " ", x.dtype(),
              " on ", x.device());
  return BatchNormReluFunction::apply(x, weight, bias, running_mean, running_var, options.momentum, options.eps);
}

}  // namespace tempered
