// SimCLR augmentations: determinism (independent of threads and batch position), ranges, and exact special cases
// (identity, mirror, grayscale), with the resized crop checked against torch's own bilinear interpolation and the
// Gaussian blur against a reflect-padded convolution.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <numeric>
#include <vector>

#include "tests/data_test_util.h"
#include "trainer/data/augment.h"
#include "trainer/data/data.h"

namespace tempered {
namespace {

namespace F = torch::nn::functional;

Dataset RandomImages(int64_t count, int64_t channels, int64_t size) {
  return RandomImageSet(count, channels, size, size, /*seed=*/7);
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> indices(n);
  std::iota(indices.begin(), indices.end(), 0);
  return indices;
}

// No crop, no flip, no colour change.
AugmentOptions IdentityOptions() {
  AugmentOptions options;
  options.crop_scale_min = options.crop_scale_max = 1.0f;
  options.crop_ratio_min = options.crop_ratio_max = 1.0f;
  options.flip_prob = 0;
  options.color_jitter = 0;
  options.grayscale_prob = 0;
  return options;
}

class AugmentTest : public testing::TestWithParam<int64_t> {  // the parameter: channels (1 or 3)
 protected:
  const Dataset data_ = RandomImages(16, GetParam(), GetParam() == 1 ? 28 : 32);
};

TEST_P(AugmentTest, ShapeTypeAndRange) {
  const torch::Tensor views = AugmentBatch(data_, {3, 1, 4, 1, 5}, 1, 0, 0, AugmentOptions());
  EXPECT_EQ(views.sizes(), (std::vector<int64_t>{5, GetParam(), data_.images.size(2), data_.images.size(3)}));
  EXPECT_EQ(views.dtype(), torch::kFloat);
  EXPECT_GE(views.min().item<float>(), 0.0f);
  EXPECT_LE(views.max().item<float>(), 1.0f);
  EXPECT_TRUE(views.isfinite().all().item<bool>());
}

TEST_P(AugmentTest, DeterministicAcrossCallsAndThreadCounts) {
  AugmentOptions options;
  const torch::Tensor reference = AugmentBatch(data_, Iota(16), 11, 2, 1, options);
  EXPECT_TRUE(torch::equal(reference, AugmentBatch(data_, Iota(16), 11, 2, 1, options)));
  for (int threads : {0, 1, 2, 3, 5, 16, 17}) {
    options.threads = threads;
    EXPECT_TRUE(torch::equal(reference, AugmentBatch(data_, Iota(16), 11, 2, 1, options))) << threads << " threads";
  }
}

TEST_P(AugmentTest, ViewDependsOnTheImageNotItsBatchPosition) {
  const AugmentOptions options;
  const torch::Tensor first = AugmentBatch(data_, {9, 0, 1, 2, 3, 4}, 5, 1, 0, options);
  const torch::Tensor sixth = AugmentBatch(data_, {0, 1, 2, 3, 4, 9}, 5, 1, 0, options);
  EXPECT_TRUE(torch::equal(first[0], sixth[5]));
  // An image repeated in a batch gets the same view twice.
  const torch::Tensor repeated = AugmentBatch(data_, {9, 9}, 5, 1, 0, options);
  EXPECT_TRUE(torch::equal(repeated[0], repeated[1]));
}

TEST_P(AugmentTest, ViewsEpochsAndSeedsGiveDifferentImages) {
  const AugmentOptions options;
  const torch::Tensor base = AugmentBatch(data_, Iota(16), 1, 0, 0, options);
  for (const torch::Tensor& other : {AugmentBatch(data_, Iota(16), 1, 0, 1, options),
                                     AugmentBatch(data_, Iota(16), 1, 1, 0, options),
                                     AugmentBatch(data_, Iota(16), 2, 0, 0, options)}) {
    for (int64_t b = 0; b < 16; ++b) EXPECT_FALSE(torch::equal(base[b], other[b])) << "image " << b;
  }
}

TEST_P(AugmentTest, IdentityOptionsGiveToFloat) {
  const torch::Tensor views = AugmentBatch(data_, Iota(16), 1, 0, 0, IdentityOptions());
  EXPECT_TRUE(torch::equal(views, ToFloat(data_.images)));
}

TEST_P(AugmentTest, FullScaleCropWithFlipGivesTheMirrorImage) {
  // Scale 1 with the default ratio range: every accepted try (and the centre fallback) is the whole square image.
  AugmentOptions options = IdentityOptions();
  options.crop_ratio_min = 3.0f / 4.0f;
  options.crop_ratio_max = 4.0f / 3.0f;
  options.flip_prob = 1;
  const torch::Tensor views = AugmentBatch(data_, Iota(16), 1, 0, 0, options);
  EXPECT_TRUE(torch::equal(views, ToFloat(data_.images).flip({3})));
}

// With a fixed crop size only the position is random: the view must equal torch's bilinear interpolation
// (align_corners = false, as torchvision's resize) of one of the possible crops.
TEST_P(AugmentTest, ResizedCropMatchesTorchBilinearInterpolation) {
  for (bool flip : {false, true}) {
    AugmentOptions options = IdentityOptions();
    options.crop_scale_min = options.crop_scale_max = 0.5f;
    options.flip_prob = flip ? 1.0f : 0.0f;
    const torch::Tensor views = AugmentBatch(data_, Iota(4), 3, 0, 0, options);
    const torch::Tensor images = ToFloat(data_.images);
    const int64_t size = images.size(2);
    const auto crop = static_cast<int64_t>(std::round(std::sqrt(0.5 * size * size)));
    for (int64_t b = 0; b < 4; ++b) {
      double best = 1e9;
      for (int64_t top = 0; top + crop <= size; ++top) {
        for (int64_t left = 0; left + crop <= size; ++left) {
          torch::Tensor expected = F::interpolate(
              images[b].unsqueeze(0).narrow(2, top, crop).narrow(3, left, crop),
              F::InterpolateFuncOptions().size(std::vector<int64_t>{size, size}).mode(torch::kBilinear).align_corners(false))[0];
          if (flip) expected = expected.flip({2});
          best = std::min(best, (expected - views[b]).abs().max().item<double>());
        }
      }
      EXPECT_LT(best, 1e-5) << "image " << b << (flip ? " flipped" : "");
    }
  }
}

TEST_P(AugmentTest, ColourJitterChangesImagesWithinRange) {
  AugmentOptions options = IdentityOptions();
  options.color_jitter = 0.4f;
  const torch::Tensor views = AugmentBatch(data_, Iota(16), 1, 0, 0, options);
  const torch::Tensor images = ToFloat(data_.images);
  for (int64_t b = 0; b < 16; ++b) EXPECT_FALSE(torch::equal(views[b], images[b])) << "image " << b;
  EXPECT_GE(views.min().item<float>(), 0.0f);
  EXPECT_LE(views.max().item<float>(), 1.0f);
}

// Every colour operation uses one factor per image, so a constant image stays constant; for one channel, a
// brightness factor in [0.6, 1.4] (contrast leaves a constant image unchanged).
TEST_P(AugmentTest, ConstantImagesStayConstant) {
  Dataset flat = data_;
  flat.images = torch::full_like(data_.images, 100);
  AugmentOptions options;
  const torch::Tensor views = AugmentBatch(flat, Iota(16), 4, 0, 0, options);
  for (int64_t b = 0; b < 16; ++b) {
    const torch::Tensor channel_min = views[b].amin({1, 2}), channel_max = views[b].amax({1, 2});
    EXPECT_LT((channel_max - channel_min).max().item<float>(), 1e-6f) << "image " << b;
    if (GetParam() == 1) {
      const float factor = views[b].max().item<float>() / (100.0f / 255.0f);
      EXPECT_GE(factor, 0.6f - 1e-5f);
      EXPECT_LE(factor, 1.4f + 1e-5f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Channels, AugmentTest, testing::Values(1, 3),
                         [](const testing::TestParamInfo<int64_t>& info) {
                           return info.param == 1 ? std::string("Gray") : std::string("Rgb");
                         });

TEST(AugmentRgbTest, GrayscaleProbabilityOneGivesEqualChannelsOfTheLuma) {
  const Dataset data = RandomImages(8, 3, 32);
  AugmentOptions options = IdentityOptions();
  options.grayscale_prob = 1;
  const torch::Tensor views = AugmentBatch(data, Iota(8), 1, 0, 0, options);
  const torch::Tensor images = ToFloat(data.images);
  const torch::Tensor luma = 0.2989 * images.select(1, 0) + 0.587 * images.select(1, 1) + 0.114 * images.select(1, 2);
  for (int c = 0; c < 3; ++c) EXPECT_TRUE(torch::allclose(views.select(1, c), luma, 0, 1e-6));
}

// torchvision's gaussian_blur as the reference: taps exp(-x^2 / (2 sigma^2)) normalised, reflect padding, one 2-D
// depthwise convolution (the augmentation runs two 1-D passes).
torch::Tensor ReferenceBlur(const torch::Tensor& images, int64_t radius, double sigma) {
  const torch::Tensor x = torch::arange(-radius, radius + 1, torch::kDouble);
  torch::Tensor taps = torch::exp(-0.5 * (x / sigma).pow(2));
  taps = (taps / taps.sum()).to(torch::kFloat);
  const int64_t channels = images.size(1);
  const torch::Tensor kernel = torch::outer(taps, taps).expand({channels, 1, 2 * radius + 1, 2 * radius + 1});
  const torch::Tensor padded =
      F::pad(images, F::PadFuncOptions({radius, radius, radius, radius}).mode(torch::kReflect));
  return F::conv2d(padded, kernel, F::Conv2dFuncOptions().groups(channels));
}

// Kernel size: floor(10% of the size) / 2 taps on each side at the default fraction (64 px: 3), and other fractions.
TEST(AugmentBlurTest, MatchesTorchvisionsGaussianBlurWithReflectPadding) {
  struct Case {
    int64_t size;
    float fraction;
    int64_t radius;
  };
  for (const Case& c : {Case{64, 0.1f, 3}, Case{32, 0.25f, 4}, Case{28, 0.1f, 1}}) {
    for (int64_t channels : {1, 3}) {
      const Dataset data = RandomImages(4, channels, c.size);
      AugmentOptions options = IdentityOptions();
      options.blur_prob = 1;
      options.blur_sigma_min = options.blur_sigma_max = 1.3f;
      options.blur_kernel_fraction = c.fraction;
      const torch::Tensor views = AugmentBatch(data, Iota(4), 1, 0, 0, options);
      const torch::Tensor expected = ReferenceBlur(ToFloat(data.images), c.radius, 1.3);
      EXPECT_LT((views - expected).abs().max().item<float>(), 2e-6f) << c.size << " px, " << channels << " channels";
    }
  }
}

TEST(AugmentBlurTest, AppliedWithItsProbabilityWithSigmaInRange) {
  const Dataset data = RandomImages(200, 3, 32);
  AugmentOptions options = IdentityOptions();
  options.blur_prob = 0.5f;
  const torch::Tensor views = AugmentBatch(data, Iota(200), 1, 0, 0, options);
  const torch::Tensor images = ToFloat(data.images);
  int blurred = 0;
  for (int64_t b = 0; b < 200; ++b) {
    if (torch::equal(views[b], images[b])) continue;
    ++blurred;
    // A blurred view lies between the blurs at the ends of the sigma range [0.1, 2]: a sigma of 0.1 leaves the
    // image as it is (the side taps are e^-50), so its distance from the image is below that of the sigma-2 blur.
    const float distance = (views[b] - images[b]).abs().mean().item<float>();
    const torch::Tensor strongest = ReferenceBlur(images.narrow(0, b, 1), 1, 2.0)[0];
    EXPECT_LE(distance, (strongest - images[b]).abs().mean().item<float>() + 1e-6f) << "image " << b;
  }
  EXPECT_GT(blurred, 70);  // Binomial(200, 0.5): 100 +- 7
  EXPECT_LT(blurred, 130);
}

// The blur draws its random numbers after every other operation: with sigma 0.1 (an identity blur) the views equal
// those without blur, so data sets without blur keep their views.
TEST(AugmentBlurTest, LeavesTheOtherRandomDrawsUnchanged) {
  const Dataset data = RandomImages(16, 3, 32);
  AugmentOptions options;
  const torch::Tensor plain = AugmentBatch(data, Iota(16), 9, 1, 0, options);
  options.blur_prob = 1;
  options.blur_sigma_min = options.blur_sigma_max = 0.1f;
  EXPECT_LT((AugmentBatch(data, Iota(16), 9, 1, 0, options) - plain).abs().max().item<float>(), 1e-6f);
}

TEST(AugmentOptionsTest, CopiedFromTheResolvedConfig) {
  DataConfig config;
  config.set_crop_scale_min(0.3f);
  config.set_crop_scale_max(0.9f);
  config.set_color_jitter(0.0f);
  config.set_grayscale_prob(0.1f);
  config.set_flip_prob(0.0f);
  config.set_workers(3);
  const AugmentOptions options = AugmentOptionsFrom(config);
  EXPECT_FLOAT_EQ(options.crop_scale_min, 0.3f);
  EXPECT_FLOAT_EQ(options.crop_scale_max, 0.9f);
  EXPECT_EQ(options.color_jitter, 0.0f);  // an explicit zero is kept: no jitter
  EXPECT_FLOAT_EQ(options.grayscale_prob, 0.1f);
  EXPECT_EQ(options.flip_prob, 0.0f);
  EXPECT_EQ(options.threads, 3);
  EXPECT_FLOAT_EQ(options.crop_ratio_min, 3.0f / 4.0f);  // not in the config: torchvision's default
  EXPECT_EQ(options.blur_prob, 0.0f);  // not for an unnamed (Fashion-MNIST) data set

  // Gaussian blur, p = 0.5, sigma in [0.1, 2], kernel 10% of the image: for ImageNet-style folders only (PAPER §5).
  for (const char* dataset : {"fashion_mnist", "cifar10", "cifar100", "svhn"}) {
    config.set_dataset(dataset);
    EXPECT_EQ(AugmentOptionsFrom(config).blur_prob, 0.0f) << dataset;
  }
  config.set_dataset("imagefolder");
  const AugmentOptions imagenet = AugmentOptionsFrom(config);
  EXPECT_EQ(imagenet.blur_prob, 0.5f);
  EXPECT_FLOAT_EQ(imagenet.blur_sigma_min, 0.1f);
  EXPECT_FLOAT_EQ(imagenet.blur_sigma_max, 2.0f);
  EXPECT_FLOAT_EQ(imagenet.blur_kernel_fraction, 0.1f);
}

// Not a check: prints the time of one batch of 256 Fashion-MNIST-sized images (the number quoted in data.cc).
// CPU time is printed next to wall time because wall time is noisy on a shared 2-core machine.
TEST(AugmentTimingTest, Batch256Of28x28) {
  const Dataset data = RandomImages(256, 1, 28);
  for (int threads : {1, 2}) {
    AugmentOptions options;
    options.threads = threads;
    AugmentBatch(data, Iota(256), 1, 0, 0, options);  // warm-up
    const int repeats = 100;
    const std::clock_t cpu_start = std::clock();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) AugmentBatch(data, Iota(256), 1, i, 0, options);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const double cpu_ms = 1000.0 * (std::clock() - cpu_start) / CLOCKS_PER_SEC;
    std::cout << "[ timing   ] AugmentBatch 256 x 1x28x28, " << threads << " thread(s): " << ms / repeats
              << " ms wall, " << cpu_ms / repeats << " ms CPU per batch\n";
  }
}

// data.image_size: views at another size than the stored images. A whole-image crop shrunk is torch's antialiased
// bilinear resize (torchvision's Resize with antialias=True); enlarged, its plain bilinear one.
TEST(AugmentImageSizeTest, WholeImageViewsMatchTorchsResize) {
  const Dataset data = RandomImages(4, 3, 32);
  for (int64_t out : {12, 20, 48}) {
    AugmentOptions options = IdentityOptions();
    options.out_size = out;
    const torch::Tensor views = AugmentBatch(data, Iota(4), 1, 0, 0, options);
    ASSERT_EQ(views.sizes(), (std::vector<int64_t>{4, 3, out, out}));
    const torch::Tensor expected = F::interpolate(
        ToFloat(data.images), F::InterpolateFuncOptions().size(std::vector<int64_t>{out, out}).mode(torch::kBilinear)
                                  .align_corners(false).antialias(out < 32));
    EXPECT_LT((views - expected.clamp(0, 1)).abs().max().item<double>(), 1e-5) << "out " << out;
  }
}

// Evaluation's images: the shorter side resized to image_size / crop_fraction, then the centre square.
TEST(AugmentImageSizeTest, EvalImagesResizeTheShorterSideThenCropTheCentre) {
  torch::manual_seed(3);
  const torch::Tensor images = torch::randint(0, 256, {2, 3, 40, 50}, torch::kUInt8);
  const torch::Tensor eval = EvalImages(images, 28, 0.875);  // shorter side 32: 32 x 40, centre 28 x 28
  ASSERT_EQ(eval.sizes(), (std::vector<int64_t>{2, 3, 28, 28}));
  const torch::Tensor resized = F::interpolate(
      ToFloat(images),
      F::InterpolateFuncOptions().size(std::vector<int64_t>{32, 40}).mode(torch::kBilinear).align_corners(false)
          .antialias(true));
  const torch::Tensor expected = resized.narrow(2, 2, 28).narrow(3, 6, 28).clamp(0, 1);
  EXPECT_LT((eval - expected).abs().max().item<double>(), 1e-5);
  const torch::Tensor square = images.narrow(3, 0, 40);
  EXPECT_TRUE(torch::equal(EvalImages(square, 40, 1.0), ToFloat(square))) << "the identity is exact";
}

TEST(AugmentImageSizeTest, ImageSizeDefaultsPerDataSet) {
  DataConfig config;
  config.set_dataset("fashion_mnist");
  EXPECT_EQ(ImageSizeOf(config), 28);
  EXPECT_EQ(EvalCropFractionOf(config), 1.0);
  config.set_dataset("cifar10");
  EXPECT_EQ(ImageSizeOf(config), 32);
  config.set_dataset("imagefolder");
  EXPECT_EQ(ImageSizeOf(config), 224);
  EXPECT_EQ(EvalCropFractionOf(config), 0.875);
  EXPECT_EQ(ImageFolderOptionsFrom(config).image_size, 256);
  config.set_image_size(32);
  config.set_eval_crop_fraction(1);
  EXPECT_EQ(ImageFolderOptionsFrom(config).image_size, 32);
  EXPECT_EQ(AugmentOptionsFrom(config).out_size, 32);
}

}  // namespace
}  // namespace tempered
