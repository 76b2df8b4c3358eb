// input_bench: Tempered's input pipeline alone on a streamed image folder: two augmented views of every image of
// each batch (RandomResizedCrop from the decoded original, colour jitter, grayscale, flip, Gaussian blur), as the
// training loop makes them. Prints one JSON line: {"views_per_second": ..., "threads": ..., ...}. Driven by
// bench/input_bench.py, which runs torchvision's pipeline on the same files side by side.
#include <gflags/gflags.h>
#include <glog/logging.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <numeric>

#include "trainer/data/augment.h"
#include "trainer/data/data.h"
#include "trainer/train.h"

DEFINE_string(data_dir, "", "an image folder (root/train/<class>/<image>)");
DEFINE_int32(image_size, 224, "the views' size");
DEFINE_int32(batch, 128, "images per batch");
DEFINE_int32(batches, 4, "timed batches (after one warm-up batch)");
DEFINE_int32(threads, 1, "decoding and augmentation threads (data.workers)");
DEFINE_bool(quick, false, "fewer batches");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  tempered::TuneAllocator();  // as tempered-train
  at::set_num_threads(FLAGS_threads);
  const tempered::Dataset data = tempered::ListImageFolder(FLAGS_data_dir, /*train=*/true);
  tempered::DataConfig config;
  config.set_dataset("imagefolder");
  config.set_image_size(FLAGS_image_size);
  config.set_crop_scale_min(0.2f);
  config.set_crop_scale_max(1.0f);
  config.set_color_jitter(0.4f);
  config.set_grayscale_prob(0.2f);
  config.set_flip_prob(0.5f);
  config.set_workers(FLAGS_threads);
  const tempered::AugmentOptions options = tempered::AugmentOptionsFrom(config);  // blur p = 0.5: imagefolder
  const int batches = FLAGS_quick ? 2 : FLAGS_batches;
  std::vector<int64_t> indices(FLAGS_batch);
  double seconds = 0;
  for (int b = 0; b <= batches; ++b) {
    for (int64_t i = 0; i < FLAGS_batch; ++i) indices[i] = (b * FLAGS_batch + i) % data.size();
    const auto start = std::chrono::steady_clock::now();
    for (int view = 0; view < 2; ++view) tempered::AugmentBatch(data, indices, 1, 0, view, options);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (b > 0) seconds += elapsed;  // batch 0 warms the page cache and the allocator
  }
  const double views = 2.0 * FLAGS_batch * batches;
  std::printf("{\"views_per_second\": %.2f, \"threads\": %d, \"image_size\": %d, \"views\": %.0f}\n", views / seconds,
              FLAGS_threads, FLAGS_image_size, views);
  return 0;
}
