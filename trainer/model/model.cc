#include "trainer/model/model.h"

#include "comm/comm.h"
#include "trainer/model/batch_norm_relu.h"
#include "trainer/model/sync_batch_norm.h"

namespace tempered {

namespace nn = torch::nn;

namespace {

// A 1-channel (N, 1, H, W) input is both NCHW and NHWC, and LibTorch's conv then gives the layout of its weight:
// with the weight in channels_last (a copy, by clone: contiguous() is a no-op at 1 channel; the parameter stays NCHW)
// the output is channels_last too, which saves a copy of it and of its gradient (~12 ms a step at batch 128 on one
// core). Returns an undefined tensor when the conv is not a plain zero-padded one.
torch::Tensor ConvChannelsLast(const nn::Conv2dImpl& conv, const torch::Tensor& x) {
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&conv.options.padding());
  if (!padding || !c10::holds_alternative<torch::enumtype::kZeros>(conv.options.padding_mode())) return {};
  return torch::conv2d(x, conv.weight.clone(at::MemoryFormat::ChannelsLast), conv.bias, *conv.options.stride(),
                       **padding, *conv.options.dilation(), conv.options.groups());
}

// Runs seq on x, except that a conv of a 1-channel channels_last input runs as ConvChannelsLast, and in training each
// BatchNorm2d followed by a ReLU runs as one fused op (batch_norm_relu.h) where it supports the input. The modules,
// and so the parameters and checkpoints, stay Conv2d, BatchNorm2d and ReLU; eval mode runs BatchNorm2d and ReLU as
// they are.
torch::Tensor ForwardFusingBatchNormRelu(nn::Sequential& seq, torch::Tensor x, bool training) {
  for (auto it = seq->begin(); it != seq->end(); ++it) {
    const auto conv = std::dynamic_pointer_cast<nn::Conv2dImpl>(it->ptr());
    if (conv && x.is_cpu() && x.dim() == 4 && x.size(1) == 1 && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      const torch::Tensor y = ConvChannelsLast(*conv, x);
      if (y.defined()) {
        x = y;
        continue;
      }
    }
    const auto bn = std::dynamic_pointer_cast<nn::BatchNorm2dImpl>(it->ptr());
    const auto next = it + 1;
    const bool relu_next = next != seq->end() && std::dynamic_pointer_cast<nn::ReLUImpl>(next->ptr());
    if (training && bn && relu_next && BatchNormReluSupports(x) &&
        bn->options.momentum().has_value() && bn->options.affine() && bn->options.track_running_stats()) {
      x = BatchNormReluTraining(x, bn->weight, bn->bias, bn->running_mean, bn->running_var,
                                {*bn->options.momentum(), bn->options.eps()});
      bn->num_batches_tracked.add_(1);
      ++it;  // the ReLU is done
    } else {
      x = it->forward(x);
    }
  }
  return x;
}

// Normalisation after a conv: none, per-rank batch norm, or batch norm over the global batch.
void AddNorm(nn::Sequential& seq, ModelConfig::Norm norm, int64_t channels) {
  if (norm == ModelConfig::BATCH) seq->push_back(nn::BatchNorm2d(channels));
  if (norm == ModelConfig::SYNC) seq->push_back(SyncBatchNorm2d(channels));
}

nn::Conv2d Conv(ModelConfig::Norm norm, int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  // A conv followed by batch norm needs no bias: the norm's shift replaces it.
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2)
                        .bias(norm == ModelConfig::NONE));
}

// conv3x3 -> norm -> ReLU
void AddConvBlock(nn::Sequential& seq, ModelConfig::Norm norm, int64_t in, int64_t out, int64_t stride) {
  seq->push_back(Conv(norm, in, out, 3, stride));
  AddNorm(seq, norm, out);
  seq->push_back(nn::ReLU(nn::ReLUOptions(true)));
}

// Four 3x3 convs (28x28 -> 7x7) and global average pooling: ~15 M multiply-adds per 28x28 image at width 32,
// sized so that a few epochs of Fashion-MNIST fit in minutes on 2 CPU cores.
nn::Sequential SmallCnn(ModelConfig::Norm norm, int64_t in_channels, int64_t width) {
  nn::Sequential seq;
  AddConvBlock(seq, norm, in_channels, width, 1);
  AddConvBlock(seq, norm, width, 2 * width, 2);
  AddConvBlock(seq, norm, 2 * width, 4 * width, 2);
  AddConvBlock(seq, norm, 4 * width, 4 * width, 1);
  return seq;
}

// ResNet basic block: relu(branch(x) + shortcut(x)), the shortcut a 1x1 conv when the shape changes.
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(ModelConfig::Norm norm, int64_t in, int64_t out, int64_t stride) {
    nn::Sequential branch;
    AddConvBlock(branch, norm, in, out, stride);
    branch->push_back(Conv(norm, out, out, 3, 1));
    AddNorm(branch, norm, out);
    branch_ = register_module("branch", branch);
    if (stride != 1 || in != out) {
      nn::Sequential shortcut;
      shortcut->push_back(Conv(norm, in, out, 1, stride));
      AddNorm(shortcut, norm, out);
      shortcut_ = register_module("shortcut", shortcut);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor shortcut = shortcut_ ? shortcut_->forward(x) : x;
    return torch::relu(ForwardFusingBatchNormRelu(branch_, x, is_training()) + shortcut);
  }

 private:
  nn::Sequential branch_{nullptr};
  nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(BasicBlock);

// ResNet-18, CIFAR variant (docs/paper.md §5): 3x3 stride-1 first conv, no max-pool, stages of 2 blocks.
nn::Sequential ResNet18(ModelConfig::Norm norm, int64_t in_channels, int64_t width) {
  nn::Sequential seq;
  AddConvBlock(seq, norm, in_channels, width, 1);
  int64_t channels = width;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t out = width << stage;
    seq->push_back(BasicBlock(norm, channels, out, stage == 0 ? 1 : 2));
    seq->push_back(BasicBlock(norm, out, out, 1));
    channels = out;
  }
  return seq;
}

// ResNet bottleneck block (torchvision's ResNet v1.5: the stride sits on the 3x3 conv): 1x1 conv to `mid` channels,
// 3x3 conv, 1x1 conv to 4 mid channels, relu(branch(x) + shortcut(x)); the shortcut a 1x1 conv when the shape changes.
class BottleneckImpl : public nn::Module {
 public:
  BottleneckImpl(ModelConfig::Norm norm, int64_t in, int64_t mid, int64_t stride) {
    nn::Sequential branch;
    branch->push_back(Conv(norm, in, mid, 1, 1));
    AddNorm(branch, norm, mid);
    branch->push_back(nn::ReLU(nn::ReLUOptions(true)));
    AddConvBlock(branch, norm, mid, mid, stride);
    branch->push_back(Conv(norm, mid, 4 * mid, 1, 1));
    AddNorm(branch, norm, 4 * mid);
    branch_ = register_module("branch", branch);
    if (stride != 1 || in != 4 * mid) {
      nn::Sequential shortcut;
      shortcut->push_back(Conv(norm, in, 4 * mid, 1, stride));
      AddNorm(shortcut, norm, 4 * mid);
      shortcut_ = register_module("shortcut", shortcut);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor shortcut = shortcut_ ? shortcut_->forward(x) : x;
    return torch::relu(ForwardFusingBatchNormRelu(branch_, x, is_training()) + shortcut);
  }

 private:
  nn::Sequential branch_{nullptr};
  nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(Bottleneck);

// Inputs at least this large get ResNet-50's ImageNet stem; smaller ones (CIFAR, SVHN) the CIFAR stem, as ResNet-18.
constexpr int64_t kImageNetStemMinSize = 64;

// ResNet-50 (docs/paper.md §5, for ImageNet-100): stages of 3, 4, 6, 3 bottleneck blocks, 4 x 8 width = 2048 features at
// width 64. The stem is ImageNet's (7x7 stride-2 conv, 3x3 stride-2 max-pool: 64x64 -> 16x16, 224 -> 56) for inputs
// of at least 64 px, and the CIFAR one (3x3 stride-1 conv, no max-pool) below that, where 4x downsampling would leave
// 1x1 maps after the last stage.
nn::Sequential ResNet50(ModelConfig::Norm norm, int64_t in_channels, int64_t width, int64_t image_size) {
  nn::Sequential seq;
  if (image_size >= kImageNetStemMinSize) {  // the test of UsesImageNetStem
    seq->push_back(Conv(norm, in_channels, width, 7, 2));
    AddNorm(seq, norm, width);
    seq->push_back(nn::ReLU(nn::ReLUOptions(true)));
    seq->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
  } else {
    AddConvBlock(seq, norm, in_channels, width, 1);
  }
  const int blocks[4] = {3, 4, 6, 3};
  int64_t channels = width;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t mid = width << stage;
    for (int b = 0; b < blocks[stage]; ++b) {
      seq->push_back(Bottleneck(norm, channels, mid, stage > 0 && b == 0 ? 2 : 1));
      channels = 4 * mid;
    }
  }
  return seq;
}

int64_t Width(const ModelConfig& config) {
  if (config.width() > 0) return config.width();
  return config.arch() == ModelConfig::RESNET18 || config.arch() == ModelConfig::RESNET50 ? 64 : 32;
}

}  // namespace

bool UsesImageNetStem(const ModelConfig& config, int64_t image_size) {
  return config.arch() == ModelConfig::RESNET50 && image_size >= kImageNetStemMinSize;
}

EncoderImpl::EncoderImpl(const ModelConfig& config, int64_t in_channels, int64_t image_size)
    : embed_dim_(config.embed_dim()) {
  const int64_t width = Width(config);
  nn::Sequential backbone;
  if (config.arch() == ModelConfig::RESNET50) {
    backbone = ResNet50(config.norm(), in_channels, width, image_size);
    feature_dim_ = 32 * width;
  } else if (config.arch() == ModelConfig::RESNET18) {
    backbone = ResNet18(config.norm(), in_channels, width);
    feature_dim_ = 8 * width;
  } else {
    backbone = SmallCnn(config.norm(), in_channels, width);
    feature_dim_ = 4 * width;
  }
  backbone->push_back(nn::AdaptiveAvgPool2d(1));
  backbone->push_back(nn::Flatten());
  backbone_ = register_module("backbone", backbone);

  nn::Sequential head;
  // The pooled features of a ReLU network share a large common component, so at initialisation every embedding
  // points the same way (uniformity ~0.01). InfoNCE escapes that state, but the hard-negative loss, whose few
  // hardest negatives are then as close as the positive, collapses into it. Normalising the features over the
  // batch (with the backbone's normalisation) removes the common component.
  if (config.norm() == ModelConfig::BATCH) head->push_back(nn::BatchNorm1d(feature_dim_));
  if (config.norm() == ModelConfig::SYNC) head->push_back(SyncBatchNorm2d(feature_dim_));
  if (config.head() == ModelConfig::MLP) {
    head->push_back(nn::Linear(feature_dim_, feature_dim_));
    head->push_back(nn::ReLU(nn::ReLUOptions(true)));
  }
  head->push_back(nn::Linear(feature_dim_, config.embed_dim()));
  head_ = register_module("head", head);
}

torch::Tensor EncoderImpl::Features(const torch::Tensor& images) {
  // Centre the [0, 1] pixels: a fixed affine map, identical for every data set and rank.
  torch::Tensor x = (images - 0.5) * 4.0;
  // On the CPU the activations are channels_last (NHWC): oneDNN's convs take and give it without reordering, batch
  // norm's per-channel loops run over contiguous channels (bench/README.md, train_vs_pytorch). The parameters stay
  // NCHW; the values are the same up to float rounding.
  if (x.is_cpu() && x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  return ForwardFusingBatchNormRelu(backbone_, x, is_training());
}

EncoderOutput EncoderImpl::forward(const torch::Tensor& images) {
  EncoderOutput out;
  out.features = Features(images);
  out.embedding = torch::nn::functional::normalize(head_->forward(out.features),
                                                   torch::nn::functional::NormalizeFuncOptions().dim(1));
  return out;
}

// Rank 0's rather than the mean over ranks, which would draw on every rank's data (closer to the statistics of one
// process over the global batch): only rank 0's make the result independent of when this runs. The broadcast never
// changes rank 0's statistics, and the others' are read only after one (training uses the batch's statistics), so
// the checkpoint cadence and a stop by a signal (an extra checkpoint) change nothing and a resumed run matches an
// uninterrupted one to the bit; a mean taken at each checkpoint rounds differently with every cadence. With norm
// SYNC the buffers are already equal, with NONE there are none.
void BroadcastBuffers(Encoder& encoder) {
  for (torch::Tensor& buffer : encoder->buffers()) comm::Broadcast(buffer, 0);
}

}  // namespace tempered
