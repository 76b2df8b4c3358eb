#include "trainer/model/backbone_export.h"

#include <glog/logging.h>

#include <cctype>
#include <utility>
#include <vector>

#include "common/files.h"

namespace tempered {

namespace {

// Splits "12.branch.3.weight" into 12 and "branch.3.weight": a module's index in its Sequential, and the rest.
std::pair<int64_t, std::string> SplitIndex(const std::string& name) {
  const size_t dot = name.find('.');
  CHECK(dot != std::string::npos && dot > 0) << "not a name inside a Sequential: " << name;
  for (size_t i = 0; i < dot; ++i) CHECK(std::isdigit(static_cast<unsigned char>(name[i]))) << name;
  return {std::stoll(name.substr(0, dot)), name.substr(dot + 1)};
}

// Conv blocks are conv, norm, ReLU (model.cc AddConvBlock), and without a norm conv, ReLU; a block's branch repeats
// that, its last conv without the ReLU.
int64_t ModulesPerConv(const ModelConfig& model) { return model.norm() == ModelConfig::NONE ? 2 : 3; }

// Module `index` of a run of conv blocks: the n-th conv ("conv<n>", torchvision's 1-based names) or its norm
// ("bn<n>").
std::string ConvOrNorm(const ModelConfig& model, int64_t index) {
  const int64_t modules_per_conv = ModulesPerConv(model);
  const int64_t n = index / modules_per_conv + 1, position = index % modules_per_conv;
  CHECK(position == 0 || (position == 1 && modules_per_conv == 3)) << "module " << index << " has no parameters";
  return (position == 0 ? "conv" : "bn") + std::to_string(n);
}

// ResNet: the stem's conv and norm (and ReLU, and the ImageNet stem's max-pool), then the blocks of the four stages
// in order, each a "branch" Sequential and, where the shape changes, a "shortcut" (torchvision's "downsample").
std::string ResNetName(const ModelConfig& model, bool imagenet_stem, const std::string& backbone_name) {
  const auto [index, rest] = SplitIndex(backbone_name);
  const int64_t stem_modules = ModulesPerConv(model) + (imagenet_stem ? 1 : 0);
  if (index < stem_modules) return ConvOrNorm(model, index) + "." + rest;
  static const std::vector<int64_t> kResNet18Blocks = {2, 2, 2, 2}, kResNet50Blocks = {3, 4, 6, 3};
  const std::vector<int64_t>& blocks = model.arch() == ModelConfig::RESNET50 ? kResNet50Blocks : kResNet18Blocks;
  int64_t block = index - stem_modules;
  size_t stage = 0;
  while (stage < blocks.size() && block >= blocks[stage]) block -= blocks[stage++];
  CHECK_LT(stage, blocks.size()) << "no such block: " << backbone_name;
  const std::string layer = "layer" + std::to_string(stage + 1) + "." + std::to_string(block) + ".";
  const size_t dot = rest.find('.');
  const std::string part = rest.substr(0, dot);
  CHECK(dot != std::string::npos && (part == "branch" || part == "shortcut")) << backbone_name;
  const auto [module, tensor] = SplitIndex(rest.substr(dot + 1));
  if (part == "shortcut") return layer + "downsample." + std::to_string(module) + "." + tensor;
  return layer + ConvOrNorm(model, module) + "." + tensor;
}

}  // namespace

std::string TorchvisionName(const ModelConfig& model, bool imagenet_stem, const std::string& backbone_name) {
  if (model.arch() == ModelConfig::RESNET18 || model.arch() == ModelConfig::RESNET50) {
    return ResNetName(model, imagenet_stem, backbone_name);
  }
  SplitIndex(backbone_name);  // checks that it is one
  return backbone_name;
}

void SaveBackbone(const std::string& path, Encoder& encoder, const ModelConfig& model, bool imagenet_stem) {
  const std::string prefix = "backbone.";
  c10::Dict<std::string, at::Tensor> state;
  const auto add = [&](const std::string& module, const std::string& tensor_name, const torch::Tensor& tensor) {
    const std::string name = TorchvisionName(model, imagenet_stem, module + "." + tensor_name);
    CHECK(state.insert(name, tensor.detach().to(torch::kCPU)).second) << "two tensors named " << name;
  };
  // Module by module, each one's parameters before its buffers: the order of torchvision's state_dict().
  for (const auto& item : encoder->named_modules()) {
    if (item.key().rfind(prefix, 0) != 0) continue;
    const std::string module = item.key().substr(prefix.size());
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) add(module, p.key(), p.value());
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) add(module, b.key(), b.value());
  }
  const std::vector<char> bytes = torch::pickle_save(state);
  WriteFileAtomically(path, [&](const FileWriter& write) { write(bytes.data(), bytes.size()); });
}

}  // namespace tempered
