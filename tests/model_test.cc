// Encoders: ResNet-50's feature dimension, stems and parameter count, and a finite unit-norm embedding.
#include <gtest/gtest.h>

#include <string>

#include "trainer/model/model.h"

namespace tempered {
namespace {

ModelConfig ResNet50Config(int32_t width) {
  ModelConfig config;
  config.set_arch(ModelConfig::RESNET50);
  config.set_norm(ModelConfig::BATCH);
  config.set_head(ModelConfig::LINEAR);
  config.set_embed_dim(128);
  config.set_width(width);
  return config;
}

// Modules whose type name (e.g. "tempered::(anonymous namespace)::BottleneckImpl") contains `type`.
int64_t CountModules(Encoder& encoder, const std::string& type) {
  int64_t count = 0;
  for (const auto& module : encoder->modules(/*include_self=*/false)) {
    count += module->name().find(type) != std::string::npos;
  }
  return count;
}

// 2048 x width / 64 features and a unit-norm embedding, at both stems.
TEST(ResNet50Test, FeatureDimAndFiniteUnitEmbedding) {
  torch::manual_seed(0);
  for (int64_t size : {32, 64}) {
    for (int32_t width : {8, 16}) {
      Encoder encoder(ResNet50Config(width), 3, size);
      const EncoderOutput out = encoder->forward(torch::rand({3, 3, size, size}));
      EXPECT_EQ(encoder->feature_dim(), 32 * width);
      EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{3, 32 * width})) << size << " px, width " << width;
      EXPECT_EQ(out.embedding.sizes(), (std::vector<int64_t>{3, 128}));
      EXPECT_TRUE(out.embedding.isfinite().all().item<bool>());
      EXPECT_TRUE(torch::allclose(out.embedding.norm(2, 1), torch::ones({3}), 0, 1e-5));
      // 16 bottleneck blocks (3 + 4 + 6 + 3); the max-pool only in the ImageNet stem (>= 64 px).
      EXPECT_EQ(CountModules(encoder, "BottleneckImpl"), 16);
      EXPECT_EQ(CountModules(encoder, "MaxPool2dImpl"), size >= 64 ? 1 : 0);
    }
  }
}

// At width 64 with the ImageNet stem the backbone is torchvision's resnet50 without its fc layer: 2048 features and
// 23,508,032 parameters (25,557,032 - 2048 x 1000 - 1000).
TEST(ResNet50Test, MatchesTorchvisionsResNet50) {
  Encoder encoder(ResNet50Config(0), 3, 224);  // width 0: the default, 64
  EXPECT_EQ(encoder->feature_dim(), 2048);
  int64_t parameters = 0;
  for (const auto& p : encoder->named_parameters()) {
    if (p.key().rfind("backbone.", 0) == 0) parameters += p.value().numel();
  }
  EXPECT_EQ(parameters, 23508032);
  torch::NoGradGuard no_grad;
  encoder->eval();
  EXPECT_EQ(encoder->forward(torch::rand({1, 3, 64, 64})).features.sizes(), (std::vector<int64_t>{1, 2048}));
}

TEST(ResNet50Test, GrayscaleInputWithoutNormalisation) {
  ModelConfig config = ResNet50Config(8);
  config.set_norm(ModelConfig::NONE);
  Encoder encoder(config, 1);  // default image size: the CIFAR stem
  const EncoderOutput out = encoder->forward(torch::rand({2, 1, 28, 28}));
  EXPECT_EQ(out.features.sizes(), (std::vector<int64_t>{2, 256}));
  EXPECT_TRUE(out.embedding.isfinite().all().item<bool>());
  EXPECT_EQ(CountModules(encoder, "MaxPool2dImpl"), 0);
}

}  // namespace
}  // namespace tempered
