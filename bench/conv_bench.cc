// conv_bench: the FLOP/s the small CNN's convs reach on this machine in isolation: the denominator of the
// compute_fraction benchmark (bench/train_bench.py), and the small CNN's FLOPs per training image (its numerator's
// factor).
//
//   conv_bench [--batch_size 256] [--threads 2] [--repetitions 10] [--width 32]
//
// The convs are the small CNN's (trainer/model/model.cc: 3x3, 1->w, w->2w stride 2, 2w->4w stride 2, 4w->4w on 28x28),
// chained without batch norm or ReLU, on 2 x batch_size views, forward and backward: the weight gradient of every
// conv and the input gradient of convs 2-4 (conv 1's input, the images, needs none, as in training). The allocator
// is tuned as in tempered-train (mallopt). Two layouts, alternating within every repetition, so that the baseline is
// the faster: NCHW or channels_last (NHWC) activations and weights. (A 1 -> 32 channel conv 1 as one matmul, an
// im2col of 9 taps, was as fast as oneDNN's channels_last conv here: 90-94 GFLOP/s both, one thread, load 5.)
// Prints one JSON line: each layout's median GFLOP/s, and conv_gflops, the faster.
//
// FLOPs (a multiply-add is 2): a conv's forward is 2 Cout Hout Wout Cin k^2 per view; its weight gradient and its
// input gradient cost as much again each. The encoder's per-image count adds the linear head's 2 d_in d_out per
// pass and counts 2 views per image.
#include <gflags/gflags.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "trainer/train.h"

DEFINE_int32(batch_size, 256, "images per step; the convs see 2 views of each");
DEFINE_int32(threads, 2, "intra-op threads");
DEFINE_int32(repetitions, 10, "timed repetitions of each way (the median is reported)");
DEFINE_int32(width, 32, "channels of the first conv (ModelConfig.width)");
DEFINE_int32(embed_dim, 128, "output of the linear head");

namespace {

struct ConvLayer {
  int64_t in, out, stride, in_size;  // in_size: input height = width
  int64_t OutSize() const { return (in_size + 2 - 3) / stride + 1; }
  double ForwardFlops() const { return 2.0 * out * OutSize() * OutSize() * in * 9; }
};

std::vector<ConvLayer> SmallCnnConvs(int64_t w) {
  return {{1, w, 1, 28}, {w, 2 * w, 2, 28}, {2 * w, 4 * w, 2, 14}, {4 * w, 4 * w, 1, 7}};
}

// Forward + weight gradients + input gradients of all but the first layer.
double ConvFlopsPerView(const std::vector<ConvLayer>& convs) {
  double flops = 0;
  for (size_t i = 0; i < convs.size(); ++i) flops += convs[i].ForwardFlops() * (i == 0 ? 2 : 3);
  return flops;
}

struct Way {
  std::string name;
  at::MemoryFormat format;
  std::vector<torch::Tensor> weights;
  torch::Tensor images, grad_out;
  std::vector<double> seconds;
};

// One forward + backward of the chained convs; returns seconds.
double Step(const std::vector<ConvLayer>& convs, Way& way) {
  const auto start = std::chrono::steady_clock::now();
  torch::Tensor x = way.images;
  for (size_t i = 0; i < convs.size(); ++i) {
    x = torch::conv2d(x, way.weights[i], {}, convs[i].stride, 1);
  }
  x.backward(way.grad_out);
  for (torch::Tensor& w : way.weights) w.mutable_grad().reset();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  tempered::TuneAllocator();  // as tempered-train
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  at::set_num_threads(FLAGS_threads);
  torch::manual_seed(0);
  const std::vector<ConvLayer> convs = SmallCnnConvs(FLAGS_width);
  const int64_t views = 2 * static_cast<int64_t>(FLAGS_batch_size);
  std::vector<Way> ways(2);
  ways[0].name = "nchw";
  ways[0].format = at::MemoryFormat::Contiguous;
  ways[1].name = "nhwc";
  ways[1].format = at::MemoryFormat::ChannelsLast;
  for (Way& way : ways) {
    for (const ConvLayer& c : convs) {
      // clone, not contiguous: a 1-channel tensor counts as contiguous in both layouts and would keep NCHW strides.
      way.weights.push_back((torch::randn({c.out, c.in, 3, 3}) * 0.1).clone(way.format).requires_grad_());
    }
    way.images = torch::rand({views, 1, 28, 28}).clone(way.format);
    way.grad_out = torch::randn({views, convs.back().out, 7, 7}).clone(way.format);
  }
  for (int r = -3; r < FLAGS_repetitions; ++r) {  // 3 untimed rounds: oneDNN primitive creation, heap growth
    for (size_t i = 0; i < ways.size(); ++i) {
      Way& way = ways[(i + r + 3) % ways.size()];  // which way goes first rotates
      const double seconds = Step(convs, way);
      if (r >= 0) way.seconds.push_back(seconds);
    }
  }
  const double conv_flops = ConvFlopsPerView(convs) * views;
  std::string per_way;
  double best = 0;
  std::string best_name;
  for (Way& way : ways) {
    std::sort(way.seconds.begin(), way.seconds.end());
    const double gflops = conv_flops / way.seconds[way.seconds.size() / 2] / 1e9;
    per_way += "\"" + way.name + "_gflops\": " + std::to_string(gflops) + ", ";
    if (gflops > best) best = gflops, best_name = way.name;
  }
  const int64_t d = convs.back().out;
  const double head_flops_per_view = 2.0 * d * FLAGS_embed_dim * 3;  // forward, weight and input gradient
  const double encoder_flops_per_image = 2 * (ConvFlopsPerView(convs) + head_flops_per_view);
  std::printf("{%s\"conv_gflops\": %.2f, \"best\": \"%s\", \"views\": %lld, \"threads\": %d, "
              "\"encoder_flops_per_image\": %.0f}\n",
              per_way.c_str(), best, best_name.c_str(), static_cast<long long>(views), at::get_num_threads(),
              encoder_flops_per_image);
  return 0;
}
