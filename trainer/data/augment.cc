// SimCLR's augmentations as the paper's code base has them, one image at a time on planar float (C, H, W) buffers.
#include "trainer/data/augment.h"

#include <glog/logging.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "trainer/data/image_ops.h"
#include "trainer/data/random.h"

namespace tempered {
namespace {

// torchvision's RandomResizedCrop.get_params: 10 tries of (area scale, log-uniform aspect ratio) that must fit in
// the image, then a centre crop clamped to the ratio range.
CropBox SampleCrop(ImageRng& rng, int64_t height, int64_t width, const AugmentOptions& options) {
  const double area = static_cast<double>(height * width);
  const double log_ratio_min = std::log(options.crop_ratio_min);
  const double log_ratio_max = std::log(options.crop_ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.Uniform(options.crop_scale_min, options.crop_scale_max);
    const double ratio = std::exp(rng.Uniform(log_ratio_min, log_ratio_max));
    const auto w = static_cast<int64_t>(std::round(std::sqrt(target_area * ratio)));
    const auto h = static_cast<int64_t>(std::round(std::sqrt(target_area / ratio)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      return {rng.Int(0, height - h), rng.Int(0, width - w), h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int64_t w = width, h = height;
  if (in_ratio < options.crop_ratio_min) {
    h = static_cast<int64_t>(std::round(w / options.crop_ratio_min));
  } else if (in_ratio > options.crop_ratio_max) {
    w = static_cast<int64_t>(std::round(h * options.crop_ratio_max));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

// torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
float Luma(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

void AdjustBrightness(float* image, int64_t count, float factor) {
  for (int64_t i = 0; i < count; ++i) image[i] = Clamp01(image[i] * factor);
}

// torchvision: blend with the mean of the grayscale image (of the image itself when C = 1).
void AdjustContrast(float* image, int64_t channels, int64_t pixels, float factor) {
  double sum = 0;
  if (channels == 3) {
    for (int64_t i = 0; i < pixels; ++i) sum += Luma(image[i], image[pixels + i], image[2 * pixels + i]);
  } else {
    for (int64_t i = 0; i < pixels; ++i) sum += image[i];
  }
  const float mean_term = (1.0f - factor) * static_cast<float>(sum / pixels);
  for (int64_t i = 0; i < channels * pixels; ++i) image[i] = Clamp01(factor * image[i] + mean_term);
}

// torchvision: blend each pixel with its own grayscale value (RGB only).
void AdjustSaturation(float* image, int64_t pixels, float factor) {
  float* r = image;
  float* g = image + pixels;
  float* b = image + 2 * pixels;
  for (int64_t i = 0; i < pixels; ++i) {
    const float gray_term = (1.0f - factor) * Luma(r[i], g[i], b[i]);
    r[i] = Clamp01(factor * r[i] + gray_term);
    g[i] = Clamp01(factor * g[i] + gray_term);
    b[i] = Clamp01(factor * b[i] + gray_term);
  }
}

// torchvision's tensor adjust_hue, per pixel: RGB -> HSV, h += shift (mod 1), HSV -> RGB. Exact, not simplified.
void ShiftHue(float& r, float& g, float& b, float shift) {
  const float maxc = std::max({r, g, b});
  const float minc = std::min({r, g, b});
  const float chroma = maxc - minc;
  if (chroma == 0) return;  // gray: hue is undefined and the pixel stays as it is
  const float s = chroma / maxc;
  const float rc = (maxc - r) / chroma, gc = (maxc - g) / chroma, bc = (maxc - b) / chroma;
  float h = maxc == r ? bc - gc : maxc == g ? 2.0f + rc - bc : 4.0f + gc - rc;
  h = std::fmod(h / 6.0f + 1.0f + shift, 1.0f);
  if (h < 0) h += 1.0f;
  const float v = maxc;
  const float sector = std::floor(h * 6.0f);
  const float f = h * 6.0f - sector;
  const float p = Clamp01(v * (1.0f - s));
  const float q = Clamp01(v * (1.0f - s * f));
  const float t = Clamp01(v * (1.0f - s * (1.0f - f)));
  switch (static_cast<int>(sector) % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
}

void AdjustHue(float* image, int64_t pixels, float shift) {
  for (int64_t i = 0; i < pixels; ++i) ShiftHue(image[i], image[pixels + i], image[2 * pixels + i], shift);
}

}  // namespace

int64_t BlurRadius(const AugmentOptions& options, int64_t size) {
  return std::min(static_cast<int64_t>(options.blur_kernel_fraction * size) / 2, size - 1);
}

namespace {

// Index of the sample at i in a line of n samples reflect-padded (torchvision/numpy "reflect": -1 -> 1, n -> n - 2).
int64_t Reflect(int64_t i, int64_t n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; }

// Separable Gaussian blur of each plane, as torchvision's gaussian_blur on tensors: taps exp(-x^2 / (2 sigma^2))
// for x in [-radius, radius], normalised to sum 1, reflect padding; one pass along rows, one along columns.
void GaussianBlur(float* image, int64_t channels, int64_t height, int64_t width, int64_t radius, float sigma) {
  std::vector<float> taps(2 * radius + 1);
  double total = 0;
  for (int64_t k = -radius; k <= radius; ++k) total += std::exp(-0.5 * (k / sigma) * (k / sigma));
  for (int64_t k = -radius; k <= radius; ++k) {
    taps[k + radius] = static_cast<float>(std::exp(-0.5 * (k / sigma) * (k / sigma)) / total);
  }
  // Blurs n samples spaced `stride` apart in place, through a copy of the line.
  std::vector<float> line(std::max(height, width));
  auto blur_line = [&](float* start, int64_t n, int64_t stride) {
    for (int64_t i = 0; i < n; ++i) line[i] = start[i * stride];
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0;
      for (int64_t k = -radius; k <= radius; ++k) sum += taps[k + radius] * line[Reflect(i + k, n)];
      start[i * stride] = sum;
    }
  };
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = image + c * height * width;
    for (int64_t y = 0; y < height; ++y) blur_line(plane + y * width, width, 1);
    for (int64_t x = 0; x < width; ++x) blur_line(plane + x, height, width);
  }
}

void ToGrayscale(float* image, int64_t pixels) {
  for (int64_t i = 0; i < pixels; ++i) {
    const float gray = Luma(image[i], image[pixels + i], image[2 * pixels + i]);
    image[i] = image[pixels + i] = image[2 * pixels + i] = gray;
  }
}

// torchvision's ColorJitter(s, s, s, min(s, 0.5)) as in InstDisc/CMC (the paper's code base), with the view's
// factors and order (DrawViewParams).
void ColorJitter(float* image, int64_t channels, int64_t pixels, const ViewParams& p) {
  for (int k = 0; k < p.jitter_ops; ++k) {
    switch (p.jitter_order[k]) {
      case 0: AdjustBrightness(image, channels * pixels, p.brightness); break;
      case 1: AdjustContrast(image, channels, pixels, p.contrast); break;
      case 2: AdjustSaturation(image, pixels, p.saturation); break;
      default: AdjustHue(image, pixels, p.hue_shift); break;
    }
  }
}

// Everything after the crop and flip (ViewParams' order), in place on the view dst (C, out_size, out_size).
void FinishView(int64_t channels, int64_t out_size, const ViewParams& p, const AugmentOptions& options, float* dst) {
  const int64_t pixels = out_size * out_size;
  ColorJitter(dst, channels, pixels, p);
  if (p.grayscale) ToGrayscale(dst, pixels);
  if (p.blur_sigma > 0) GaussianBlur(dst, channels, out_size, out_size, BlurRadius(options, out_size), p.blur_sigma);
}

// The draws after the crop's, in the pipeline's order (see ViewParams).
void DrawAfterCrop(ImageRng& rng, int64_t channels, const AugmentOptions& options, ViewParams* p) {
  p->flip = rng.Bernoulli(options.flip_prob);
  const float strength = options.color_jitter;
  if (strength > 0) {
    p->jitter_ops = channels == 3 ? 4 : 2;  // grayscale images get brightness and contrast only
    for (int i = p->jitter_ops - 1; i > 0; --i) std::swap(p->jitter_order[i], p->jitter_order[rng.Int(0, i)]);
    const double lo = std::max(0.0, 1.0 - strength), hi = 1.0 + strength;
    const double hue = std::min(strength, 0.5f);
    p->brightness = static_cast<float>(rng.Uniform(lo, hi));
    p->contrast = static_cast<float>(rng.Uniform(lo, hi));
    p->saturation = static_cast<float>(rng.Uniform(lo, hi));
    p->hue_shift = static_cast<float>(rng.Uniform(-hue, hue));
  }
  p->grayscale = channels == 3 && rng.Bernoulli(options.grayscale_prob);
  if (options.blur_prob > 0 && rng.Bernoulli(options.blur_prob)) {
    p->blur_sigma = static_cast<float>(rng.Uniform(options.blur_sigma_min, options.blur_sigma_max));
  }
}

ImageRng StreamOf(uint64_t seed, int64_t epoch, int64_t index, int view) {
  return ImageRng(MixSeed(kAugmentDomain, {seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index),
                                           static_cast<uint64_t>(view)}));
}

// A view of a streamed image: the crop is drawn on the original's size (the same draws as in memory), then
// only as many pixels are decoded as the crop needs at out_size, and the box is scaled onto them.
void AugmentStreamed(const ImageFiles& files, int64_t row, int64_t out_size, ImageRng& rng,
                     const AugmentOptions& options, float* dst) {
  ViewParams p;
  CropBox& box = p.box;
  const StreamedImage image = ReadStreamedImage(files, row, [&](const ImageSize& original) {
    box = SampleCrop(rng, original.height, original.width, options);
    return ImageSize{(original.height * out_size + box.height - 1) / box.height,
                     (original.width * out_size + box.width - 1) / box.width};
  });
  if (image.replaced) box = {0, 0, 64, 64};
  const DecodedImage& d = image.decoded;
  const double sy = static_cast<double>(d.height) / image.original.height;
  const double sx = static_cast<double>(d.width) / image.original.width;
  CropBox scaled = box;
  if (sy != 1.0 || sx != 1.0) {
    scaled.top = std::min<int64_t>(std::lround(box.top * sy), d.height - 1);
    scaled.left = std::min<int64_t>(std::lround(box.left * sx), d.width - 1);
    scaled.height = std::clamp<int64_t>(std::lround(box.height * sy), 1, d.height - scaled.top);
    scaled.width = std::clamp<int64_t>(std::lround(box.width * sx), 1, d.width - scaled.left);
  }
  DrawAfterCrop(rng, 3, options, &p);
  ResizeCropInto(d.pixels.data(), 3, d.height, d.width, scaled, out_size, out_size, p.flip, dst);
  FinishView(3, out_size, p, options, dst);
}

}  // namespace

ViewParams DrawViewParams(uint64_t seed, int64_t epoch, int64_t index, int view, int64_t channels, int64_t height,
                          int64_t width, const AugmentOptions& options) {
  ImageRng rng = StreamOf(seed, epoch, index, view);
  ViewParams p;
  p.box = SampleCrop(rng, height, width, options);
  DrawAfterCrop(rng, channels, options, &p);
  return p;
}

AugmentOptions AugmentOptionsFrom(const DataConfig& config) {
  // ResolveConfig has filled every field, so a zero here is the user's explicit choice (e.g. no flips).
  AugmentOptions options;
  options.crop_scale_min = config.crop_scale_min();
  options.crop_scale_max = config.crop_scale_max();
  options.color_jitter = config.color_jitter();
  options.grayscale_prob = config.grayscale_prob();
  options.flip_prob = config.flip_prob();
  options.blur_prob = config.dataset() == "imagefolder" ? 0.5f : 0.0f;
  options.threads = config.workers();
  options.out_size = ImageSizeOf(config);
  return options;
}

// Timing (Release, GCC 12, `augment_test --gtest_filter='*Timing*'`): a batch of 256 Fashion-MNIST-sized images
// (1x28x28) with the paper's options costs 0.59 ms of CPU time on 1 thread (wall time was 1.1-1.8 ms on 1 or 2
// threads only because the 2 cores were shared with other builds at the time).
torch::Tensor AugmentBatch(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                           int view, const AugmentOptions& options) {
  CHECK(data.streamed() || (data.images.dtype() == torch::kUInt8 && data.images.dim() == 4))
      << "images must be uint8 (N, C, H, W)";
  CHECK(options.crop_scale_min > 0 && options.crop_scale_min <= options.crop_scale_max);
  CHECK(options.crop_ratio_min > 0 && options.crop_ratio_min <= options.crop_ratio_max);
  const int64_t batch = static_cast<int64_t>(indices.size());
  for (int64_t index : indices) CHECK(index >= 0 && index < data.size()) << "image index " << index;
  if (data.streamed()) {
    CHECK_GT(options.out_size, 0) << "views of a streamed folder need AugmentOptions.out_size";
    const int64_t view_floats = 3 * options.out_size * options.out_size;
    torch::Tensor out = torch::empty({batch, 3, options.out_size, options.out_size}, torch::kFloat);
    float* dst = out.data_ptr<float>();
    ParallelFor(batch, options.threads, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        ImageRng rng = StreamOf(seed, epoch, indices[b], view);
        AugmentStreamed(*data.files, indices[b], options.out_size, rng, options, dst + b * view_floats);
      }
    });
    return out;
  }
  const torch::Tensor images = data.images.contiguous();
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  CHECK(channels == 1 || channels == 3) << "augmentations support 1 or 3 channels, got " << channels;
  const int64_t out_size = options.out_size > 0 ? options.out_size : height;
  CHECK(options.out_size > 0 || height == width) << "views of non-square images need AugmentOptions.out_size";
  const int64_t image_bytes = channels * height * width, view_floats = channels * out_size * out_size;
  torch::Tensor out = torch::empty({batch, channels, out_size, out_size}, torch::kFloat);
  const uint8_t* src = images.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  ParallelFor(batch, options.threads, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const ViewParams p = DrawViewParams(seed, epoch, indices[b], view, channels, height, width, options);
      float* out = dst + b * view_floats;
      ResizeCropInto(src + indices[b] * image_bytes, channels, height, width, p.box, out_size, out_size, p.flip, out);
      FinishView(channels, out_size, p, options, out);
    }
  });
  return out;
}
}  // namespace tempered
