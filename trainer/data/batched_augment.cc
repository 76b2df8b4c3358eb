// AugmentTensors: the per-image pipeline of augment.cc restated as batched tensor operations. The crop, resize and
// flip of each sample are one pair of resampling matrices (output rows x input rows, output columns x input columns)
// built from its box, so a batch of boxes of different sizes is two batched matmuls; the blur is a third matrix with
// the reflect padding folded in. The colour operations are per pixel, applied to the samples that draw them, in each
// sample's own order.
#include "trainer/data/batched_augment.h"

#include <glog/logging.h>

#include <cmath>

namespace tempered {
namespace {

torch::Tensor Luma(const torch::Tensor& x) {  // (n, 3, H, W) -> (n, 1, H, W), torchvision's weights
  return x.narrow(1, 0, 1) * 0.2989f + x.narrow(1, 1, 1) * 0.587f + x.narrow(1, 2, 1) * 0.114f;
}

// Resampling weights (B, out, in) of PyTorch's antialiased bilinear resize (the triangle filter of
// _compute_indices_weights_aa, widened by the scale factor when shrinking) from the segment [offset, offset +
// length) of each sample's `in` pixels to `out` pixels. When upsampling it equals bilinear with align_corners =
// false, clamped at the segment's ends, which is what augment.cc's upsampling path computes. Mirrored where `flip`.
torch::Tensor ResizeWeights(const torch::Tensor& offset, const torch::Tensor& length, const torch::Tensor& flip,
                            int64_t in, int64_t out) {
  const auto options = offset.options();
  const torch::Tensor start = offset.view({-1, 1, 1}), size = length.view({-1, 1, 1});
  const torch::Tensor scale = size / static_cast<double>(out);
  const torch::Tensor support = scale.clamp_min(1.0);
  const torch::Tensor center = scale * (torch::arange(out, options).view({1, -1, 1}) + 0.5);
  const torch::Tensor local = torch::arange(in, options).view({1, 1, -1}) - start;  // position inside the segment
  torch::Tensor w = (1.0 - (local - center + 0.5).abs() / support).clamp_min(0.0);
  w = w * ((local >= 0) & (local < size)).to(w.scalar_type());
  w = w / w.sum(2, /*keepdim=*/true).clamp_min(1e-12);
  return torch::where(flip.view({-1, 1, 1}), w.flip(1), w);
}

// Float (B, C, out, out) in [0, 1]: each sample's box resized, mirrored where params say.
torch::Tensor CropResizeFlip(const torch::Tensor& images, const std::vector<ViewParams>& params, int64_t out) {
  std::vector<float> box_values;
  std::vector<uint8_t> flip_values;
  for (const ViewParams& p : params) {
    box_values.insert(box_values.end(), {static_cast<float>(p.box.top), static_cast<float>(p.box.left),
                                         static_cast<float>(p.box.height), static_cast<float>(p.box.width)});
    flip_values.push_back(p.flip ? 1 : 0);
  }
  const torch::Tensor boxes = torch::tensor(box_values).view({-1, 4}).to(images.device());
  const torch::Tensor flips = torch::tensor(flip_values, torch::kUInt8).to(images.device()).to(torch::kBool);
  const torch::Tensor no_flip = torch::zeros_like(flips);
  const torch::Tensor rows = ResizeWeights(boxes.select(1, 0), boxes.select(1, 2), no_flip, images.size(2), out);
  const torch::Tensor cols = ResizeWeights(boxes.select(1, 1), boxes.select(1, 3), flips, images.size(3), out);
  const torch::Tensor x = images.to(torch::kFloat).div_(255.0f);
  return torch::matmul(torch::matmul(rows.unsqueeze(1), x), cols.transpose(1, 2).unsqueeze(1)).clamp_(0, 1);
}

torch::Tensor Column(const torch::Tensor& factors) { return factors.view({-1, 1, 1, 1}); }

torch::Tensor Brightness(const torch::Tensor& x, const torch::Tensor& f) { return (x * Column(f)).clamp_(0, 1); }

// Blend with the mean of the grayscale image (the mean summed in double, as augment.cc does).
torch::Tensor Contrast(const torch::Tensor& x, const torch::Tensor& f) {
  const torch::Tensor gray = x.size(1) == 3 ? Luma(x) : x;
  const torch::Tensor mean = gray.to(torch::kDouble).mean({1, 2, 3}).to(torch::kFloat);
  return (Column(f) * x + Column((1 - f) * mean)).clamp_(0, 1);
}

torch::Tensor Saturation(const torch::Tensor& x, const torch::Tensor& f) {
  return (Column(f) * x + Column(1 - f) * Luma(x)).clamp_(0, 1);
}

// torchvision's tensor adjust_hue: RGB -> HSV, h += shift (mod 1), HSV -> RGB; gray pixels stay as they are.
torch::Tensor Hue(const torch::Tensor& x, const torch::Tensor& shift) {
  const torch::Tensor r = x.select(1, 0), g = x.select(1, 1), b = x.select(1, 2);
  const torch::Tensor maxc = torch::max(torch::max(r, g), b), minc = torch::min(torch::min(r, g), b);
  const torch::Tensor chroma = maxc - minc;
  const torch::Tensor gray = chroma == 0;
  const torch::Tensor safe_chroma = torch::where(gray, torch::ones_like(chroma), chroma);
  const torch::Tensor s = chroma / torch::where(gray, torch::ones_like(maxc), maxc);
  const torch::Tensor rc = (maxc - r) / safe_chroma, gc = (maxc - g) / safe_chroma, bc = (maxc - b) / safe_chroma;
  torch::Tensor h = torch::where(maxc == r, bc - gc, torch::where(maxc == g, 2.0f + rc - bc, 4.0f + gc - rc));
  h = torch::fmod(h / 6.0f + 1.0f + shift.view({-1, 1, 1}), 1.0f);
  h = torch::where(h < 0, h + 1.0f, h);
  const torch::Tensor sector = torch::floor(h * 6.0f);
  const torch::Tensor f = h * 6.0f - sector;
  const torch::Tensor v = maxc;
  const torch::Tensor p = (v * (1.0f - s)).clamp(0, 1), q = (v * (1.0f - s * f)).clamp(0, 1);
  const torch::Tensor t = (v * (1.0f - s * (1.0f - f))).clamp(0, 1);
  const torch::Tensor pick = sector.to(torch::kLong).remainder(6).unsqueeze(0);
  const auto choose = [&](std::initializer_list<torch::Tensor> by_sector) {
    return torch::stack(by_sector).gather(0, pick).squeeze(0);
  };
  const torch::Tensor rgb = torch::stack({choose({v, q, p, p, t, v}), choose({t, v, v, q, p, p}),
                                          choose({p, p, t, v, v, q})}, 1);
  return torch::where(gray.unsqueeze(1), x, rgb);
}

// Applies op(x[rows], factors[rows]) to the rows listed (host indices), in place.
template <typename Op>
void ApplyTo(torch::Tensor& x, const std::vector<int64_t>& rows, const torch::Tensor& factors, Op op) {
  if (rows.empty()) return;
  const torch::Tensor index = torch::tensor(rows, torch::kLong).to(x.device());
  x.index_copy_(0, index, op(x.index_select(0, index), factors.index_select(0, index)));
}

// ColorJitter with each sample's order: at position k, each operation runs on the samples that put it there.
void ColorJitter(torch::Tensor& x, const std::vector<ViewParams>& params) {
  const int64_t batch = x.size(0);
  std::vector<float> values;  // (4, batch): brightness, contrast, saturation, hue shift
  for (const auto field : {&ViewParams::brightness, &ViewParams::contrast, &ViewParams::saturation,
                           &ViewParams::hue_shift}) {
    for (const ViewParams& p : params) values.push_back(p.*field);
  }
  const torch::Tensor factors = torch::tensor(values).view({4, batch}).to(x.device());
  for (int k = 0; k < 4; ++k) {
    std::array<std::vector<int64_t>, 4> rows;  // by operation
    for (int64_t b = 0; b < batch; ++b) {
      if (k < params[b].jitter_ops) rows[params[b].jitter_order[k]].push_back(b);
    }
    ApplyTo(x, rows[0], factors[0], Brightness);
    ApplyTo(x, rows[1], factors[1], Contrast);
    ApplyTo(x, rows[2], factors[2], Saturation);
    ApplyTo(x, rows[3], factors[3], Hue);
  }
}

// Blur matrices (n, size, size) of Gaussian taps of each sigma over [-radius, radius], normalised to sum 1, with
// reflect padding folded in (torchvision's gaussian_blur): row i gathers sample Reflect(i + k) with tap k.
torch::Tensor BlurMatrices(const torch::Tensor& sigma, int64_t size, int64_t radius) {
  const int64_t taps = 2 * radius + 1;
  std::vector<int64_t> source(size * taps);
  for (int64_t i = 0; i < size; ++i) {
    for (int64_t k = -radius; k <= radius; ++k) {
      const int64_t j = i + k;
      source[i * taps + k + radius] = j < 0 ? -j : j >= size ? 2 * (size - 1) - j : j;
    }
  }
  const int64_t n = sigma.size(0);
  const torch::Tensor offsets = torch::arange(-radius, radius + 1, sigma.options().dtype(torch::kDouble));
  torch::Tensor w = torch::exp(-0.5 * (offsets.view({1, -1}) / sigma.to(torch::kDouble).view({-1, 1})).pow(2));
  w = (w / w.sum(1, /*keepdim=*/true)).to(torch::kFloat);
  const torch::Tensor index = torch::tensor(source, torch::kLong).to(sigma.device()).view({1, size, taps});
  return torch::zeros({n, size, size}, sigma.options().dtype(torch::kFloat))
      .scatter_add_(2, index.expand({n, size, taps}), w.view({n, 1, taps}).expand({n, size, taps}));
}

void Blur(torch::Tensor& x, const std::vector<ViewParams>& params, const AugmentOptions& options) {
  std::vector<int64_t> rows;
  std::vector<float> sigmas;
  for (size_t b = 0; b < params.size(); ++b) {
    if (params[b].blur_sigma > 0) rows.push_back(static_cast<int64_t>(b)), sigmas.push_back(params[b].blur_sigma);
  }
  if (rows.empty()) return;
  const int64_t size = x.size(2);
  const torch::Tensor blur = BlurMatrices(torch::tensor(sigmas).to(x.device()), size, BlurRadius(options, size));
  const torch::Tensor index = torch::tensor(rows, torch::kLong).to(x.device());
  const torch::Tensor m = blur.unsqueeze(1);
  x.index_copy_(0, index, torch::matmul(torch::matmul(m, x.index_select(0, index)), m.transpose(2, 3)));
}

}  // namespace

torch::Tensor AugmentTensors(const torch::Tensor& images, const std::vector<ViewParams>& params, int64_t out_size,
                             const AugmentOptions& options) {
  CHECK(images.dtype() == torch::kUInt8 && images.dim() == 4) << "images must be uint8 (B, C, H, W)";
  CHECK(images.size(1) == 1 || images.size(1) == 3) << "augmentations support 1 or 3 channels";
  CHECK_EQ(images.size(0), static_cast<int64_t>(params.size())) << "one ViewParams per image";
  torch::NoGradGuard no_grad;
  torch::Tensor x = CropResizeFlip(images, params, out_size);
  ColorJitter(x, params);
  std::vector<int64_t> gray;
  for (size_t b = 0; b < params.size(); ++b) {
    if (params[b].grayscale) gray.push_back(static_cast<int64_t>(b));
  }
  ApplyTo(x, gray, torch::zeros({x.size(0)}, x.options()),
          [](const torch::Tensor& rgb, const torch::Tensor&) { return Luma(rgb).expand_as(rgb).contiguous(); });
  Blur(x, params, options);
  return x;
}

torch::Tensor AugmentBatchOn(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                             int view, const AugmentOptions& options, torch::Device device) {
  CHECK(!data.streamed()) << "AugmentBatchOn needs an in-memory data set";
  const int64_t channels = data.images.size(1), height = data.images.size(2), width = data.images.size(3);
  const int64_t out_size = options.out_size > 0 ? options.out_size : height;
  std::vector<ViewParams> params;
  params.reserve(indices.size());
  for (int64_t index : indices) {
    CHECK(index >= 0 && index < data.size()) << "image index " << index;
    params.push_back(DrawViewParams(seed, epoch, index, view, channels, height, width, options));
  }
  const torch::Tensor index = torch::tensor(indices, torch::kLong);
  torch::Tensor rows = torch::empty({index.size(0), channels, height, width},
                                    torch::TensorOptions(torch::kUInt8).pinned_memory(device.is_cuda()));
  torch::index_select_out(rows, data.images, 0, index);  // pinned for a GPU, so that the copy below is asynchronous
  return AugmentTensors(rows.to(device, /*non_blocking=*/true), params, out_size, options);
}

}  // namespace tempered
