#include "trainer/data/image_ops.h"

#include <ATen/Parallel.h>
#include <glog/logging.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/utf8.h"

namespace tempered {
namespace {

// Source taps of bilinear resampling from `in` to `out` samples with align_corners = false (torchvision's and
// F.interpolate's convention): output sample i reads in[i0] * (1 - weight) + in[i1] * weight.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> weight;
};
Taps BilinearTaps(int64_t in, int64_t out) {
  Taps taps;
  const double scale = static_cast<double>(in) / out;
  for (int64_t i = 0; i < out; ++i) {
    const double src = std::max(0.0, (i + 0.5) * scale - 0.5);
    const auto i0 = std::min(static_cast<int64_t>(src), in - 1);
    taps.i0.push_back(i0);
    taps.i1.push_back(std::min(i0 + 1, in - 1));
    taps.weight.push_back(static_cast<float>(src - i0));
  }
  return taps;
}

// Exact uint8 -> float / 255 (the same division ToFloat does, so an identity augmentation equals ToFloat).
const std::array<float, 256>& ByteToUnit() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 255.0f;
    return t;
  }();
  return table;
}

// Crops `box` out of src (C, H, W) and resizes it bilinearly to dst (C, out_h, out_w), mirrored left-right when
// `flip`. For a box no larger than the output (every crop when the views keep the stored size): only upsampling,
// where bilinear needs no antialiasing filter.
void UpsampleCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                      int64_t out_h, int64_t out_w, bool flip, float* dst) {
  const auto& unit = ByteToUnit();
  const Taps rows = BilinearTaps(box.height, out_h);
  const Taps cols = BilinearTaps(box.width, out_w);
  for (int64_t c = 0; c < channels; ++c) {
    const uint8_t* plane = src + c * height * width;
    for (int64_t y = 0; y < out_h; ++y) {
      const uint8_t* row0 = plane + (box.top + rows.i0[y]) * width + box.left;
      const uint8_t* row1 = plane + (box.top + rows.i1[y]) * width + box.left;
      const float wy = rows.weight[y];
      float* out = dst + (c * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        const float top = unit[row0[cols.i0[x]]] + cols.weight[x] * (unit[row0[cols.i1[x]]] - unit[row0[cols.i0[x]]]);
        const float bottom =
            unit[row1[cols.i0[x]]] + cols.weight[x] * (unit[row1[cols.i1[x]]] - unit[row1[cols.i0[x]]]);
        out[flip ? out_w - 1 - x : x] = top + wy * (bottom - top);
      }
    }
  }
}

// Taps of PyTorch's antialiased bilinear resize (align_corners = false; ATen's _compute_indices_weights_aa, which
// torchvision's Resize and RandomResizedCrop use with antialias=True): a triangle filter widened by the scale
// factor when shrinking, so that every source pixel contributes. Output sample i reads
// sum_k weight[i * span + k] * in[first[i] + k], k < count[i].
struct FilterTaps {
  std::vector<int64_t> first, count;
  std::vector<float> weight;
  int64_t span = 0;
};
FilterTaps TriangleTaps(int64_t in, int64_t out) {
  FilterTaps taps;
  const double scale = static_cast<double>(in) / out;
  const double support = std::max(scale, 1.0);
  const double inverse = 1.0 / support;
  taps.span = 2 * static_cast<int64_t>(std::ceil(support)) + 1;
  taps.weight.assign(out * taps.span, 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (i + 0.5);
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) total += std::max(0.0, 1.0 - std::abs((j - center + 0.5) * inverse));
    for (int64_t j = lo; j < hi; ++j) {
      const double w = std::max(0.0, 1.0 - std::abs((j - center + 0.5) * inverse));
      taps.weight[i * taps.span + (j - lo)] = total > 0 ? static_cast<float>(w / total) : 0.0f;
    }
    taps.first.push_back(lo);
    taps.count.push_back(hi - lo);
  }
  return taps;
}

// UpsampleCropInto for a box larger than the output in some direction: the antialiased resize, separable (rows
// first, into a (box.height, out_w) buffer, then columns).
void ResampleCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                      int64_t out_h, int64_t out_w, bool flip, float* dst) {
  const auto& unit = ByteToUnit();
  const FilterTaps rows = TriangleTaps(box.height, out_h);
  const FilterTaps cols = TriangleTaps(box.width, out_w);
  std::vector<float> across(box.height * out_w);
  for (int64_t c = 0; c < channels; ++c) {
    const uint8_t* plane = src + c * height * width;
    for (int64_t y = 0; y < box.height; ++y) {
      const uint8_t* row = plane + (box.top + y) * width + box.left;
      for (int64_t x = 0; x < out_w; ++x) {
        const float* w = &cols.weight[x * cols.span];
        float sum = 0;
        for (int64_t k = 0; k < cols.count[x]; ++k) sum += w[k] * unit[row[cols.first[x] + k]];
        across[y * out_w + x] = sum;
      }
    }
    for (int64_t y = 0; y < out_h; ++y) {
      const float* w = &rows.weight[y * rows.span];
      float* out = dst + (c * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        float sum = 0;
        for (int64_t k = 0; k < rows.count[y]; ++k) sum += w[k] * across[(rows.first[y] + k) * out_w + x];
        out[flip ? out_w - 1 - x : x] = Clamp01(sum);
      }
    }
  }
}

}  // namespace

float Clamp01(float v) { return std::min(1.0f, std::max(0.0f, v)); }

void ResizeCropInto(const uint8_t* src, int64_t channels, int64_t height, int64_t width, const CropBox& box,
                    int64_t out_h, int64_t out_w, bool flip, float* dst) {
  if (box.height <= out_h && box.width <= out_w) {
    UpsampleCropInto(src, channels, height, width, box, out_h, out_w, flip, dst);
  } else {
    ResampleCropInto(src, channels, height, width, box, out_h, out_w, flip, dst);
  }
}

void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& body) {
  if (threads <= 0) {
    at::parallel_for(0, n, 1, body);
    return;
  }
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors((n + chunk - 1) / std::max<int64_t>(chunk, 1) + 1);
  const auto guarded = [&](size_t slot, int64_t begin, int64_t end) {
    try {
      body(begin, end);
    } catch (...) {
      errors[slot] = std::current_exception();  // rethrown below: an exception must not leave a std::thread
    }
  };
  size_t slot = 1;
  for (int64_t begin = chunk; begin < n; begin += chunk) workers.emplace_back(guarded, slot++, begin, std::min(n, begin + chunk));
  guarded(0, 0, std::min(n, chunk));
  for (auto& worker : workers) worker.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

StreamedImage ReadStreamedImage(const ImageFiles& files, int64_t row,
                                const std::function<ImageSize(const ImageSize&)>& needed) {
  const std::string& path = files.paths[row];
  StreamedImage image;
  try {
    const std::vector<uint8_t> bytes = ReadImageBytes(path);
    image.original = ReadImageSize(bytes, path);
    const ImageSize need = needed(image.original);
    image.decoded = DecodeImage(bytes, path, need.height, need.width);
  } catch (const UserError& e) {
    if (!files.skip_bad) throw;
    if (files.bad.fetch_add(1) < 10) {
      LOG(WARNING) << Utf8Safe(e.what()) << " Replaced by a grey image (data.skip_bad_images).";
    }
    image.original = {64, 64};
    image.decoded = {std::vector<uint8_t>(3 * 64 * 64, 128), 64, 64};
    image.replaced = true;
  }
  return image;
}

}  // namespace tempered
