// encoder_bench: one training forward + backward of the encoder (trainer/model/model.h) three ways, alternating within
// every repetition so that all three see the same drift of the shared machine's load:
//   nchw       the encoder's modules run one by one on NCHW input (PyTorch eager's default);
//   nhwc       the same modules with channels_last weights on channels_last input (PyTorch's channels_last recipe,
//              model.to(memory_format=torch.channels_last), on a copy of the encoder);
//   encoder    Encoder::forward: channels_last activations and the fused BatchNorm2d + ReLU (batch_norm_relu.h).
//
//   encoder_bench [--batch_size 256] [--threads 2] [--repetitions 15] [--width 32]
//
// Prints the median and minimum milliseconds of each and one JSON line. Small CNN on 28x28 grayscale, 2 views per
// image, the allocator tuned as in tempered-train.
#include <gflags/gflags.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "trainer/model/model.h"
#include "trainer/train.h"

DEFINE_int32(batch_size, 256, "images per step; the encoder sees 2 views of each");
DEFINE_int32(threads, 2, "intra-op threads");
DEFINE_int32(repetitions, 15, "timed repetitions of each variant");
DEFINE_int32(width, 32, "ModelConfig.width");

namespace {

namespace F = torch::nn::functional;

// The encoder's backbone and head run module by module (Sequential::forward), as PyTorch eager does.
torch::Tensor ModulesForward(tempered::Encoder& encoder, const torch::Tensor& images, at::MemoryFormat format) {
  auto children = encoder->named_children();
  const torch::Tensor x = ((images - 0.5) * 4.0).contiguous(format);
  const torch::Tensor features = children["backbone"]->as<torch::nn::Sequential>()->forward(x);
  return F::normalize(children["head"]->as<torch::nn::Sequential>()->forward(features),
                      F::NormalizeFuncOptions().dim(1));
}

double Milliseconds(const std::function<torch::Tensor()>& forward, const torch::Tensor& weights) {
  const auto start = std::chrono::steady_clock::now();
  (forward() * weights).sum().backward();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  tempered::TuneAllocator();  // as tempered-train
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  at::set_num_threads(FLAGS_threads);
  torch::manual_seed(0);
  tempered::ModelConfig config;
  config.set_arch(tempered::ModelConfig::SMALL_CNN);
  config.set_norm(tempered::ModelConfig::BATCH);
  config.set_head(tempered::ModelConfig::LINEAR);
  config.set_embed_dim(128);
  config.set_width(FLAGS_width);
  tempered::Encoder encoder(config, 1, 28);
  encoder->train();
  tempered::Encoder channels_last(config, 1, 28);
  channels_last->train();
  for (auto& p : channels_last->parameters()) {
    if (p.dim() == 4) p.set_data(p.data().clone(at::MemoryFormat::ChannelsLast));
  }
  const torch::Tensor images = torch::rand({2 * static_cast<int64_t>(FLAGS_batch_size), 1, 28, 28});
  const torch::Tensor weights = torch::randn({images.size(0), 128});
  const char* names[] = {"nchw", "nhwc", "encoder"};
  const std::function<torch::Tensor()> variants[] = {
      [&] { return ModulesForward(encoder, images, at::MemoryFormat::Contiguous); },
      [&] { return ModulesForward(channels_last, images, at::MemoryFormat::ChannelsLast); },
      [&] { return encoder->forward(images).embedding; }};
  std::vector<double> ms[3];
  for (int r = -2; r < FLAGS_repetitions; ++r) {  // 2 untimed rounds: oneDNN primitives, heap growth
    for (int i = 0; i < 3; ++i) {
      const int v = (i + r + 3) % 3;  // rotate which goes first
      const double t = Milliseconds(variants[v], weights);
      encoder->zero_grad();
      channels_last->zero_grad();
      if (r >= 0) ms[v].push_back(t);
    }
  }
  std::printf("{");
  for (int v = 0; v < 3; ++v) {
    std::sort(ms[v].begin(), ms[v].end());
    std::printf("%s\"%s_ms_median\": %.1f, \"%s_ms_min\": %.1f", v ? ", " : "", names[v], ms[v][ms[v].size() / 2],
                names[v], ms[v][0]);
  }
  std::printf(", \"views\": %lld, \"threads\": %d}\n", static_cast<long long>(images.size(0)), at::get_num_threads());
  return 0;
}
