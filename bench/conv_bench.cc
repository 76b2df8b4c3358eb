// conv_bench: the FLOP/s LibTorch's convs (oneDNN) reach on this machine in isolation: the denominator of the
// compute_fraction benchmark (bench/train_bench.py), and the small CNN's FLOPs per training image (its numerator's
// factor).
//
//   conv_bench [--batch_size 256] [--threads 2] [--repetitions 10] [--width 32] [--channels_last]
//
// The convs are the small CNN's (trainer/model.cc: 3x3, 1->w, w->2w stride 2, 2w->4w stride 2, 4w->4w on 28x28),
// chained without batch norm or ReLU, on 2 x batch_size views, forward and backward: the weight gradient of every
// conv and the input gradient of convs 2-4 (conv 1's input, the images, needs none, as in training). The allocator
// is tuned as in tempered-train (mallopt). --channels_last runs them on NHWC activations (oneDNN's preferred layout
// for training; train_bench.py runs both layouts and takes the faster as the baseline). Prints one JSON line.
//
// FLOPs (a multiply-add is 2): a conv's forward is 2 Cout Hout Wout Cin k^2 per view; its weight gradient and its
// input gradient cost as much again each. The encoder's per-image count adds the linear head's 2 d_in d_out per
// pass and counts 2 views per image.
#include <gflags/gflags.h>
#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

DEFINE_int32(batch_size, 256, "images per step; the convs see 2 views of each");
DEFINE_int32(threads, 2, "intra-op threads");
DEFINE_int32(repetitions, 10, "timed repetitions (the median is reported)");
DEFINE_int32(width, 32, "channels of the first conv (ModelConfig.width)");
DEFINE_int32(embed_dim, 128, "output of the linear head");
DEFINE_bool(channels_last, false, "NHWC activations and weights (else NCHW)");

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

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  mallopt(M_MMAP_MAX, 0);  // as tempered-train's TuneAllocator
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  at::set_num_threads(FLAGS_threads);
  torch::manual_seed(0);
  const std::vector<ConvLayer> convs = SmallCnnConvs(FLAGS_width);
  std::vector<torch::Tensor> weights;
  const auto format = FLAGS_channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  for (const ConvLayer& c : convs) {
    weights.push_back((torch::randn({c.out, c.in, 3, 3}) * 0.1).contiguous(format).requires_grad_());
  }
  const int64_t views = 2 * static_cast<int64_t>(FLAGS_batch_size);
  const torch::Tensor images = torch::rand({views, 1, 28, 28}).contiguous(format);
  const torch::Tensor grad_out = torch::randn({views, convs.back().out, 7, 7}).contiguous(format);

  auto step = [&] {
    torch::Tensor x = images;
    for (size_t i = 0; i < convs.size(); ++i) {
      x = torch::conv2d(x, weights[i], {}, convs[i].stride, 1);
    }
    x.backward(grad_out);
    for (torch::Tensor& w : weights) w.mutable_grad().reset();
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: oneDNN primitive creation, heap growth
  std::vector<double> seconds;
  for (int r = 0; r < FLAGS_repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    step();
    seconds.push_back(Seconds(start));
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const double conv_flops = ConvFlopsPerView(convs) * views;
  const int64_t d = convs.back().out;
  const double head_flops_per_view = 2.0 * d * FLAGS_embed_dim * 3;  // forward, weight and input gradient
  const double encoder_flops_per_image = 2 * (ConvFlopsPerView(convs) + head_flops_per_view);
  std::printf("{\"conv_gflops\": %.2f, \"conv_seconds_median\": %.5f, \"views\": %lld, \"threads\": %d, "
              "\"channels_last\": %s, \"encoder_flops_per_image\": %.0f}\n",
              conv_flops / median / 1e9, median, static_cast<long long>(views), at::get_num_threads(),
              FLAGS_channels_last ? "true" : "false", encoder_flops_per_image);
  return 0;
}
