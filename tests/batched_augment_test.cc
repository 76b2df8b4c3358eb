// The batched (tensor) augmentation against the per-image one: the same views from the same draws, to float
// rounding, for gray and RGB images, square and not, crops that upsample, downsample (antialiased) or both, with and
// without blur, and pixels of zero chroma (hue's special case). The tolerance, 2e-5 on values in [0, 1], is ~170x
// float's epsilon: the two paths sum the same taps in different orders, and a few operations (contrast's mean,
// HSV's sector) amplify a rounding difference a little; a wrong tap, factor or order gives differences above 1e-3.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tests/data_test_util.h"
#include "trainer/data/augment.h"
#include "trainer/data/batched_augment.h"
#include "trainer/data/data.h"

namespace tempered {
namespace {

constexpr double kTolerance = 2e-5;

Dataset RandomImages(int64_t count, int64_t channels, int64_t height, int64_t width) {
  return RandomImageSet(count, channels, height, width, /*seed=*/11);
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> indices(n);
  std::iota(indices.begin(), indices.end(), 0);
  return indices;
}

// The largest difference between the two paths over two views of every image (in a shuffled order, so that the
// batch position plays no part).
double LargestDifference(const Dataset& data, const AugmentOptions& options) {
  std::vector<int64_t> indices = Iota(data.size());
  std::reverse(indices.begin(), indices.end());
  double largest = 0;
  for (int view = 0; view < 2; ++view) {
    const torch::Tensor scalar = AugmentBatch(data, indices, 3, 1, view, options);
    const torch::Tensor batched = AugmentBatchOn(data, indices, 3, 1, view, options, torch::kCPU);
    EXPECT_EQ(batched.sizes(), scalar.sizes());
    largest = std::max(largest, (batched - scalar).abs().max().item<double>());
  }
  return largest;
}

TEST(BatchedAugmentTest, FashionMnistSizedGrayImagesWithThePapersOptions) {
  EXPECT_LT(LargestDifference(RandomImages(64, 1, 28, 28), AugmentOptions()), kTolerance);
}

TEST(BatchedAugmentTest, CifarSizedRgbImagesWithThePapersOptions) {
  EXPECT_LT(LargestDifference(RandomImages(64, 3, 32, 32), AugmentOptions()), kTolerance);
}

TEST(BatchedAugmentTest, RgbImagesWithBlurAsForImageFolders) {
  AugmentOptions options;
  options.blur_prob = 0.5f;
  EXPECT_LT(LargestDifference(RandomImages(48, 3, 40, 40), options), kTolerance);
}

// Views smaller than the stored images: most crops shrink (the antialiased filter), some shrink along one side only.
TEST(BatchedAugmentTest, DownsamplingAndNonSquareImages) {
  AugmentOptions options;
  options.out_size = 24;
  options.blur_prob = 0.5f;
  EXPECT_LT(LargestDifference(RandomImages(48, 3, 56, 40), options), kTolerance);
  options.out_size = 36;
  EXPECT_LT(LargestDifference(RandomImages(48, 3, 40, 56), options), kTolerance);
}

// Half the images gray (R = G = B: chroma 0, which the hue shift leaves alone) and some constant.
TEST(BatchedAugmentTest, GrayAndConstantPixelsOfRgbImages) {
  Dataset data = RandomImages(32, 3, 32, 32);
  data.images.narrow(0, 0, 16).copy_(data.images.narrow(0, 0, 16).narrow(1, 0, 1).expand({16, 3, 32, 32}));
  data.images.narrow(0, 16, 4).fill_(90);
  EXPECT_LT(LargestDifference(data, AugmentOptions()), kTolerance);
}

// The test itself can fail: another view's parameters give differences far above the tolerance.
TEST(BatchedAugmentTest, DifferentDrawsDifferFarBeyondTheTolerance) {
  const Dataset data = RandomImages(16, 3, 32, 32);
  const AugmentOptions options;
  const torch::Tensor scalar = AugmentBatch(data, Iota(16), 3, 1, 0, options);
  const torch::Tensor other_view = AugmentBatchOn(data, Iota(16), 3, 1, 1, options, torch::kCPU);
  EXPECT_GT((other_view - scalar).abs().max().item<double>(), 1e-2);
}

}  // namespace
}  // namespace tempered
