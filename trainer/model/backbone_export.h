// The encoder's backbone (without the projection head) as a file Python loads: DIR/backbone.pth, a state dict that
// torch.load returns as a dict of tensors, named as torchvision names them (docs/results.md, "The backbone in Python").
#pragma once

#include <string>

#include "proto/tempered.pb.h"
#include "trainer/model/model.h"

namespace tempered {

// The torchvision name of a backbone parameter or buffer, given its name inside the encoder's backbone Sequential
// (the encoder's name without "backbone."):
//   ResNet-18/50: "0.weight" -> "conv1.weight", "1.running_mean" -> "bn1.running_mean",
//                 "4.branch.3.weight" -> "layer1.1.conv2.weight", "5.shortcut.1.bias" -> "layer2.0.downsample.1.bias"
//                 (torchvision.models.resnet18 / resnet50 without fc; imagenet_stem: the stem has a max-pool);
//   small CNN:    unchanged, the indices of the nn.Sequential of examples/load_backbone.py.
// With norm NONE there are no bn entries and every conv has a bias ("conv1.bias"). CHECK-fails on a name that is
// not one of the backbone's.
std::string TorchvisionName(const ModelConfig& model, bool imagenet_stem, const std::string& backbone_name);

// Writes the backbone's parameters and buffers (on the CPU, under their TorchvisionName) to `path` atomically, with
// torch::pickle_save. The caller is rank 0, after BroadcastBuffers: the running statistics are the evaluated ones.
void SaveBackbone(const std::string& path, Encoder& encoder, const ModelConfig& model, bool imagenet_stem);

}  // namespace tempered
