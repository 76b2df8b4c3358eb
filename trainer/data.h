// Data: readers, the per-epoch sharding of the global batch, and SimCLR augmentations on tensors.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

// A labelled image set held in memory as uint8 (N, C, H, W) plus int64 labels (N).
struct Dataset {
  torch::Tensor images;  // uint8 (N, C, H, W)
  torch::Tensor labels;  // int64 (N)
  int64_t num_classes = 0;
  int64_t size() const { return images.size(0); }
};

// Reads an IDX file (gzipped or not, detected by the gzip magic) with zlib. Throws UserError naming the file when
// it is missing, truncated, has a wrong magic number, a corrupt gzip stream, or more or less data than its header
// declares.
torch::Tensor ReadIdxImages(const std::string& path);  // uint8 (N, 1, rows, cols)
torch::Tensor ReadIdxLabels(const std::string& path);  // int64 (N)

// Fashion-MNIST from `dir` ({train,t10k}-{images-idx3,labels-idx1}-ubyte.gz); labels checked to lie in [0, 10),
// images to be 28x28 and as many as the labels.
Dataset LoadFashionMnist(const std::string& dir, bool train);
// Dispatches on config.dataset; applies train_subset / test_subset.
Dataset LoadDataset(const DataConfig& config, bool train);

// The shard of one global batch that a rank computes. The global batch is rows [begin, end) of the epoch's
// permutation; rank r takes a contiguous block, block sizes differing by at most 1 (the first size % world ranks
// get one more). Every rank computes the same permutation from (seed, epoch).
struct Shard {
  int64_t offset = 0;  // first row of this rank's block inside the global batch
  int64_t count = 0;   // rows of this rank's block
};
Shard ShardOf(int64_t global_batch, int rank, int world);
// The epoch's permutation of [0, n): a function of (seed, epoch) only.
std::vector<int64_t> EpochPermutation(int64_t n, uint64_t seed, int64_t epoch);
// Number of global steps per epoch: full global batches only (the partial last batch is dropped at every world
// size, so the computation does not depend on the world size).
int64_t StepsPerEpoch(int64_t n, int64_t global_batch);

struct AugmentOptions {
  float crop_scale_min = 0.2f;
  float crop_scale_max = 1.0f;
  float crop_ratio_min = 3.0f / 4.0f;
  float crop_ratio_max = 4.0f / 3.0f;
  float flip_prob = 0.5f;
  float color_jitter = 0.4f;    // brightness and contrast (all images); saturation and hue (RGB only, hue shift
                                // at most min(color_jitter, 0.5)), as torchvision's ColorJitter in random order
  float grayscale_prob = 0.2f;  // RGB only
  int threads = 0;              // 0 = at::get_num_threads()
};
AugmentOptions AugmentOptionsFrom(const DataConfig& config);

// One augmented view of each selected image, as float (B, C, H, W) in [0, 1] at the input resolution, normalised
// per channel afterwards by the model. The random stream of image `indices[b]` in view `view` is a function of
// (seed, epoch, indices[b], view) only, so results do not depend on the thread count, the world size or the
// position in the batch.
torch::Tensor AugmentBatch(const Dataset& data, const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                           int view, const AugmentOptions& options);
// The un-augmented images as float (B, C, H, W) in [0, 1].
torch::Tensor ToFloat(const torch::Tensor& uint8_images);

}  // namespace tempered
