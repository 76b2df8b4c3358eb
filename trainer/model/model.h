// Encoders: a backbone (pooled features, used by linear evaluation) and a projection head to the L2-normalised
// embedding the contrastive loss sees (docs/paper.md §1: f(x) on the unit sphere, 128-d).
#pragma once

#include <torch/torch.h>

#include "proto/tempered.pb.h"

namespace tempered {

struct EncoderOutput {
  torch::Tensor features;   // (B, feature_dim) pooled backbone features
  torch::Tensor embedding;  // (B, embed_dim), rows of unit L2 norm
};

class EncoderImpl : public torch::nn::Module {
 public:
  // image_size: the inputs' height and width; it picks ResNet-50's stem (ImageNet's for >= 64 px, CIFAR's below).
  EncoderImpl(const ModelConfig& config, int64_t in_channels, int64_t image_size = 32);
  EncoderOutput forward(const torch::Tensor& images);  // images float (B, C, H, W) in [0, 1]
  torch::Tensor Features(const torch::Tensor& images);  // backbone only
  int64_t feature_dim() const { return feature_dim_; }
  int64_t embed_dim() const { return embed_dim_; }

 private:
  torch::nn::Sequential backbone_{nullptr};
  torch::nn::Sequential head_{nullptr};
  int64_t feature_dim_ = 0;
  int64_t embed_dim_ = 0;
};
TORCH_MODULE(Encoder);

// Whether the encoder of `config` for inputs of image_size px has ImageNet's stem (7x7 stride-2 conv, max-pool):
// ResNet-50 from 64 px on; every other encoder has the CIFAR stem (3x3 stride-1 conv, no max-pool).
bool UsesImageNetStem(const ModelConfig& config, int64_t image_size);

// Makes every buffer (batch norm's running statistics) rank 0's on every rank, as DDP's broadcast_buffers does.
// Collective; call it before every evaluation and checkpoint. With norm BATCH each rank's statistics follow its own
// shard's batches: without it the ranks would evaluate W different models (each embedding its share of the kNN
// bank), and a checkpoint would keep rank 0's alone, so a resumed run would evaluate yet another.
void BroadcastBuffers(Encoder& encoder);

}  // namespace tempered
