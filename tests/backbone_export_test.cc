// backbone.pth's names (trainer/model/backbone_export.h) against torchvision's, built here from torchvision's own
// structure (torchvision/models/resnet.py: conv1, bn1, layer<s>.<b>.conv<c>/bn<c>, downsample.0/1 on a block whose
// shape changes), not from Tempered's module indices; the counts are torchvision 0.14's len(state_dict()) without
// fc. tests/backbone_interop_test.py loads the files into torchvision itself.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "common/files.h"
#include "trainer/model/backbone_export.h"

namespace tempered {
namespace {

ModelConfig Config(ModelConfig::Arch arch, ModelConfig::Norm norm, int32_t width) {
  ModelConfig config;
  config.set_arch(arch);
  config.set_norm(norm);
  config.set_head(ModelConfig::MLP);
  config.set_embed_dim(16);
  config.set_width(width);
  return config;
}

void AddConv(const std::string& conv, const std::string& bn, ModelConfig::Norm norm, std::vector<std::string>* out) {
  out->push_back(conv + ".weight");
  if (norm == ModelConfig::NONE) {
    out->push_back(conv + ".bias");
    return;
  }
  for (const char* tensor : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}) {
    out->push_back(bn + "." + tensor);
  }
}

// torchvision's ResNet state_dict() keys without fc, in its order; with norm NONE, conv biases and no norm.
std::vector<std::string> TorchvisionResNetNames(const std::vector<int>& blocks, bool bottleneck,
                                                ModelConfig::Norm norm) {
  std::vector<std::string> names;
  AddConv("conv1", "bn1", norm, &names);
  for (size_t s = 0; s < blocks.size(); ++s) {
    for (int b = 0; b < blocks[s]; ++b) {
      const std::string block = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      for (int c = 1; c <= (bottleneck ? 3 : 2); ++c) {
        AddConv(block + "conv" + std::to_string(c), block + "bn" + std::to_string(c), norm, &names);
      }
      // Stride 2 (stages 2-4) or a channel change (every bottleneck stage's first block).
      if (b == 0 && (s > 0 || bottleneck)) AddConv(block + "downsample.0", block + "downsample.1", norm, &names);
    }
  }
  return names;
}

class BackboneExportTest : public testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove(path_); }

  // SaveBackbone's file read back in C++: its keys in order, each tensor checked against the encoder's.
  std::vector<std::string> SavedNames(const ModelConfig& model, int64_t image_size) {
    Encoder encoder(model, 3, image_size);
    const bool imagenet_stem = UsesImageNetStem(model, image_size);
    SaveBackbone(path_, encoder, model, imagenet_stem);
    const std::string bytes = ReadWholeFile(path_, "backbone");
    const c10::Dict<c10::IValue, c10::IValue> state =
        torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
    std::map<std::string, torch::Tensor> ours;
    for (const auto& item : encoder->named_parameters()) ours[item.key()] = item.value();
    for (const auto& item : encoder->named_buffers()) ours[item.key()] = item.value();
    std::vector<std::string> names;
    for (const auto& entry : state) names.push_back(entry.key().toStringRef());
    const std::string prefix = "backbone.";
    for (const auto& [name, tensor] : ours) {
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string torchvision = TorchvisionName(model, imagenet_stem, name.substr(prefix.size()));
      if (!state.contains(torchvision)) {
        ADD_FAILURE() << name << " -> " << torchvision << ", which the file lacks";
        continue;
      }
      EXPECT_TRUE(torch::equal(state.at(torchvision).toTensor(), tensor)) << name;
    }
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size()) << "duplicate names";
    return names;
  }

  std::string path_ = (std::filesystem::temp_directory_path() /
                       ("backbone_export_test." + std::to_string(getpid()) + ".pth")).string();
};

TEST_F(BackboneExportTest, ResNet18IsTorchvisionsResNet18WithoutFc) {
  const std::vector<std::string> expected = TorchvisionResNetNames({2, 2, 2, 2}, false, ModelConfig::BATCH);
  EXPECT_EQ(expected.size(), 120u);
  EXPECT_EQ(SavedNames(Config(ModelConfig::RESNET18, ModelConfig::BATCH, 8), 32), expected);
}

TEST_F(BackboneExportTest, ResNet50AtBothStemsIsTorchvisionsResNet50WithoutFc) {
  const std::vector<std::string> expected = TorchvisionResNetNames({3, 4, 6, 3}, true, ModelConfig::BATCH);
  EXPECT_EQ(expected.size(), 318u);
  for (int64_t image_size : {32, 64}) {
    EXPECT_EQ(SavedNames(Config(ModelConfig::RESNET50, ModelConfig::BATCH, 4), image_size), expected) << image_size;
  }
}

// Synchronised batch norm has no num_batches_tracked (torch's BatchNorm2d fills in 0 when it is missing).
TEST_F(BackboneExportTest, SyncBatchNormHasNoBatchCount) {
  std::vector<std::string> expected;
  for (const std::string& name : TorchvisionResNetNames({2, 2, 2, 2}, false, ModelConfig::SYNC)) {
    if (name.find("num_batches_tracked") == std::string::npos) expected.push_back(name);
  }
  EXPECT_EQ(SavedNames(Config(ModelConfig::RESNET18, ModelConfig::SYNC, 8), 32), expected);
}

TEST_F(BackboneExportTest, WithoutNormEveryConvHasABias) {
  EXPECT_EQ(SavedNames(Config(ModelConfig::RESNET18, ModelConfig::NONE, 8), 32),
            TorchvisionResNetNames({2, 2, 2, 2}, false, ModelConfig::NONE));
  EXPECT_EQ(SavedNames(Config(ModelConfig::RESNET50, ModelConfig::NONE, 4), 64),
            TorchvisionResNetNames({3, 4, 6, 3}, true, ModelConfig::NONE));
}

// The small CNN keeps its Sequential's indices: conv, bn, ReLU four times (examples/load_backbone.py's nn.Sequential).
TEST_F(BackboneExportTest, SmallCnnIsTheReadmesSequential) {
  std::vector<std::string> expected;
  for (int conv = 0; conv < 4; ++conv) {
    AddConv(std::to_string(3 * conv), std::to_string(3 * conv + 1), ModelConfig::BATCH, &expected);
  }
  EXPECT_EQ(SavedNames(Config(ModelConfig::SMALL_CNN, ModelConfig::BATCH, 4), 28), expected);
}

TEST(TorchvisionNameTest, TheHeadersExamples) {
  const ModelConfig resnet18 = Config(ModelConfig::RESNET18, ModelConfig::BATCH, 64);
  EXPECT_EQ(TorchvisionName(resnet18, false, "0.weight"), "conv1.weight");
  EXPECT_EQ(TorchvisionName(resnet18, false, "1.running_mean"), "bn1.running_mean");
  EXPECT_EQ(TorchvisionName(resnet18, false, "4.branch.3.weight"), "layer1.1.conv2.weight");
  EXPECT_EQ(TorchvisionName(resnet18, false, "5.shortcut.1.bias"), "layer2.0.downsample.1.bias");
  const ModelConfig resnet50 = Config(ModelConfig::RESNET50, ModelConfig::BATCH, 64);
  EXPECT_EQ(TorchvisionName(resnet50, true, "4.branch.7.running_var"), "layer1.0.bn3.running_var");
  EXPECT_EQ(TorchvisionName(resnet50, true, "19.branch.6.weight"), "layer4.2.conv3.weight");
}

}  // namespace
}  // namespace tempered
