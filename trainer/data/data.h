// Data: readers, the per-epoch sharding of the global batch, and SimCLR augmentations on tensors.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proto/tempered.pb.h"

namespace tempered {

// The files of an image folder read as it trains (data.storage STREAM), one per row of the Dataset, and the count
// of those that could not be read and were replaced (data.skip_bad_images).
struct ImageFiles {
  std::vector<std::string> paths;
  bool skip_bad = false;
  mutable std::atomic<int64_t> bad{0};
};

// A labelled image set: in memory as uint8 (N, C, H, W), or a streamed image folder's files (RGB), plus int64
// labels (N).
struct Dataset {
  torch::Tensor images;  // uint8 (N, C, H, W); undefined when streamed
  torch::Tensor labels;  // int64 (N)
  int64_t num_classes = 0;
  torch::Tensor file_index;                 // int64 (N): each row's position in its split's file order
  std::shared_ptr<const ImageFiles> files;  // a streamed image folder's files; null otherwise
  int64_t size() const { return labels.size(0); }
  bool streamed() const { return files != nullptr; }
  int64_t channels() const { return streamed() ? 3 : images.size(1); }
};

// Samples of a split (data.train_subset / test_subset, the convergence curve's kNN set, the metric samples) are
// drawn by one fixed-seed, class-stratified order, never by file order: image folders are stored class by class,
// so the first rows would be a few classes only. The order interleaves the classes, each shuffled with a fixed seed,
// by quantile (the j-th of class c's n_c images sits at (j + 1/2) / n_c): every prefix holds each class in
// proportion to its size (within one image), and a smaller sample is part of every larger one. The same on every
// rank and in every run, whatever its seed, so that runs are evaluated on the same images.
std::vector<int64_t> StratifiedOrder(const torch::Tensor& labels);
// The rows of the first n images of StratifiedOrder, in ascending order; every row when n >= the split's size.
std::vector<int64_t> StratifiedSample(const torch::Tensor& labels, int64_t n);
// The rows `rows` of `data` (images, labels and file_index), copied.
Dataset SelectRows(const Dataset& data, const std::vector<int64_t>& rows);
// How a sample of n of a split's `size` images was drawn, for result.json: "all 10000" or
// "class-stratified 1000 of 10000".
std::string SampleDescription(int64_t n, int64_t size);

// Reads an IDX file (gzipped or not, detected by the gzip magic) with zlib. Throws UserError naming the file when
// it is missing, truncated, has a wrong magic number, a corrupt gzip stream, or more or less data than its header
// declares.
torch::Tensor ReadIdxImages(const std::string& path);  // uint8 (N, 1, rows, cols)
torch::Tensor ReadIdxLabels(const std::string& path);  // int64 (N)

// Every reader below throws UserError naming the file (or folder) when it is missing, truncated, of the wrong size
// or format, or holds a label outside [0, num_classes).

// Fashion-MNIST from `dir` ({train,t10k}-{images-idx3,labels-idx1}-ubyte.gz); labels checked to lie in [0, 10),
// images to be 28x28 and as many as the labels.
Dataset LoadFashionMnist(const std::string& dir, bool train);

// CIFAR-10 / CIFAR-100, binary versions (https://www.cs.toronto.edu/~kriz/cifar.html), files directly in `dir`:
// CIFAR-10: data_batch_1..5.bin (train) / test_batch.bin, records of 1 label byte + 3072 pixel bytes;
// CIFAR-100: train.bin / test.bin, records of 1 coarse + 1 fine label byte + 3072 pixel bytes (the fine label is
// used: 100 classes). Pixels are stored as planes R, G, B of 32x32, which is already (3, 32, 32).
Dataset LoadCifar10(const std::string& dir, bool train);
Dataset LoadCifar100(const std::string& dir, bool train);

// SVHN, cropped digits (http://ufldl.stanford.edu/housenumbers/): train_32x32.mat / test_32x32.mat, read with
// matio (MAT v5, compressed or not, or v7.3). X is uint8 32x32x3xN (MATLAB order), y holds N labels in 1..10,
// where 10 is the digit 0; labels are mapped to the digit (0..9). Needs a build with TEMPERED_DATASETS=ON.
Dataset LoadSvhn(const std::string& dir, bool train);

// ImageNet's layout: dir/train/<class>/<image> and dir/val/<class>/<image> (or dir/test/<class>/<image>, as
// CIFAR-10's JPEG releases have it, when there is no dir/val). Classes are the sorted names of the
// folders in dir/train (label = position), images the files of each folder in name order with an image extension
// (.jpg .jpeg .png .bmp .ppm .pgm .tif .tiff .webp, any case; other files are skipped). Every image is decoded
// with OpenCV (JPEGs checked for truncation first), its shorter side resized to `image_size` with area averaging
// and the centre image_size x image_size kept, so the set lives in memory as uint8 (N, 3, S, S): 64x64 costs 12 KiB
// per image (1.6 GB for ImageNet-100's 126,689 training images). Decoding runs on at::get_num_threads() threads.
// Needs a build with TEMPERED_DATASETS=ON.
struct ImageFolderOptions {
  int64_t image_size = 64;  // the stored size
};
Dataset LoadImageFolder(const std::string& dir, bool train, const ImageFolderOptions& options = {});
// The same folder streamed (data.storage STREAM): its files and labels, nothing decoded.
Dataset ListImageFolder(const std::string& dir, bool train);

// data.storage AUTO keeps an image folder in memory when both splits, decoded at ImageFolderOptionsFrom's size,
// take at most this many bytes per rank, and streams it otherwise.
constexpr int64_t kMemoryStorageBudget = int64_t{4} << 30;
// The stored size for a config: image_size / eval_crop_fraction, so that evaluation's resize is the identity and its
// centre crop exact (224 / 0.875 = 256; CIFAR-10 as JPEGs at 32 / 1 = its own 32 x 32).
ImageFolderOptions ImageFolderOptionsFrom(const DataConfig& config);

// Dispatches on config.dataset; applies train_subset / test_subset (StratifiedSample). cifar10, cifar100, svhn and imagefolder have
// no default directory: data.data_dir must name one. imagefolder images are held at ImageFolderOptionsFrom's size.
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

// The un-augmented images as float (B, C, H, W) in [0, 1].
torch::Tensor ToFloat(const torch::Tensor& uint8_images);
// Evaluation's view of uint8 images: the shorter side resized (antialiased when shrinking) to
// image_size / crop_fraction, then the centre image_size square, as float (B, C, image_size, image_size) in [0, 1].
// Exactly ToFloat when the images are image_size square and crop_fraction is 1.
torch::Tensor EvalImages(const torch::Tensor& uint8_images, int64_t image_size, double crop_fraction);
// EvalImages of rows [begin, end) of `data`, in memory or streamed (decoded on `threads` threads, 0 = LibTorch's).
torch::Tensor EvalImagesOf(const Dataset& data, int64_t begin, int64_t end, int64_t image_size,
                           double crop_fraction, int threads = 0);

// data.image_size and data.eval_crop_fraction with their per-data-set defaults applied (0 = unset; see
// proto/tempered.proto). Left unset by ResolveConfig, so that the configs, and the sweep's run ids, of runs made
// before these fields existed stay as they were.
int64_t ImageSizeOf(const DataConfig& config);
double EvalCropFractionOf(const DataConfig& config);

}  // namespace tempered
