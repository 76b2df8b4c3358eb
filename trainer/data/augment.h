// SimCLR's augmentations: the random parameters of each view, and the views made one image at a time on the CPU
// (AugmentBatch). batched_augment.h makes the same views with tensor operations on any device.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <vector>

#include "proto/tempered.pb.h"
#include "trainer/data/data.h"

namespace tempered {

struct AugmentOptions {
  float crop_scale_min = 0.2f;
  float crop_scale_max = 1.0f;
  float crop_ratio_min = 3.0f / 4.0f;
  float crop_ratio_max = 4.0f / 3.0f;
  float flip_prob = 0.5f;
  float color_jitter = 0.4f;    // brightness and contrast (all images); saturation and hue (RGB only, hue shift
                                // at most min(color_jitter, 0.5)), as torchvision's ColorJitter in random order
  float grayscale_prob = 0.2f;  // RGB only
  // Gaussian blur (SimCLR's, added for ImageNet in the paper): with probability blur_prob, a separable Gaussian of
  // sigma uniform in [blur_sigma_min, blur_sigma_max] pixels and a (2r + 1)-tap kernel, r = floor(blur_kernel_fraction
  // x image size) / 2, reflect-padded at the borders (torchvision's gaussian_blur). Applied last.
  float blur_prob = 0.0f;
  float blur_sigma_min = 0.1f;
  float blur_sigma_max = 2.0f;
  float blur_kernel_fraction = 0.1f;
  int threads = 0;        // 0 = at::get_num_threads()
  int64_t out_size = 0;   // the views' height and width; 0 = the stored images' (square) size
};
// The config's options; Gaussian blur with p = 0.5 for imagefolder (ImageNet-style) data sets only, as in the paper.
AugmentOptions AugmentOptionsFrom(const DataConfig& config);

// One augmented view of each selected image, as float (B, C, S, S) in [0, 1] at S = options.out_size, normalised
// per channel afterwards by the model. The random stream of image `indices[b]` in view `view` is a function of
// (seed, epoch, indices[b], view) only, so results do not depend on the thread count, the world size, the position
// in the batch or the storage: a streamed image is decoded (on options.threads threads) and cropped from its
// original, and when that original is what memory storage holds (CIFAR-10's 32 x 32 at image_size 32), the views
// are the same. A streamed file that cannot be read throws UserError naming it (or, with data.skip_bad_images, is
// replaced by a grey image and counted in ImageFiles.bad).
torch::Tensor AugmentBatch(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                           int view, const AugmentOptions& options);
// A crop box in an image's pixels.
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// One view's random parameters. The paper's pipeline (InstDisc order): RandomResizedCrop -> ColorJitter ->
// RandomGrayscale -> HorizontalFlip, with SimCLR's Gaussian blur after the grayscale for ImageNet. The flip is folded
// into the resize: every later step is per pixel or a mirror-symmetric filter, so mirroring first gives the same
// image. They are drawn in this order from the view's stream: box (torchvision's RandomResizedCrop.get_params), flip,
// the jitter's order then its four factors (when color_jitter > 0), grayscale (RGB only), blur (when blur_prob > 0,
// then its sigma). The blur draws last, so enabling it leaves every other draw unchanged.
struct ViewParams {
  CropBox box;
  bool flip = false;
  int jitter_ops = 0;  // how many of jitter_order apply: 4 (RGB), 2 (grayscale images), 0 (no jitter)
  std::array<int, 4> jitter_order = {0, 1, 2, 3};  // 0 brightness, 1 contrast, 2 saturation, 3 hue
  float brightness = 1, contrast = 1, saturation = 1, hue_shift = 0;
  bool grayscale = false;
  float blur_sigma = 0;  // 0: no blur
};
// The parameters of image `index`'s view `view` in `epoch` for an image of channels x height x width: a function of
// (seed, epoch, index, view) and the options only. AugmentBatch applies exactly these.
ViewParams DrawViewParams(uint64_t seed, int64_t epoch, int64_t index, int view, int64_t channels, int64_t height,
                          int64_t width, const AugmentOptions& options);
// Half width of the blur kernel for views of `size` pixels: floor(blur_kernel_fraction x size) / 2 taps (SimCLR: 10%
// of 224 -> 23 taps), at most size - 1 so that reflect padding stays inside the image.
int64_t BlurRadius(const AugmentOptions& options, int64_t size);

}  // namespace tempered
