// Checkpoints: a CPU resume restores the model, its batch-norm statistics, the optimiser's momentum and the bank to
// the bit, and every tensor is loaded onto the device the run asks for (not the one rank 0 saved from).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/config.h"
#include "common/errors.h"
#include "trainer/io/checkpoint.h"

namespace tempered {
namespace {

class CheckpointTest : public testing::Test {
 protected:
  void SetUp() override {
    config_ = ResolveConfig(RunConfig());
    config_.mutable_model()->set_width(4);
    config_.mutable_model()->set_embed_dim(16);
    path_ = (std::filesystem::temp_directory_path() / ("checkpoint_test." + std::to_string(getpid()) + ".pt"))
                .string();
  }
  void TearDown() override { std::filesystem::remove(path_); }

  // One SGD step in training mode: parameters, running statistics and momentum all change.
  void Train(Encoder& encoder, torch::optim::SGD& optimizer, const torch::Tensor& images) {
    encoder->train();
    optimizer.zero_grad();
    encoder->forward(images).embedding.sum().backward();
    optimizer.step();
  }

  std::unique_ptr<torch::optim::SGD> Sgd(Encoder& encoder) {
    return std::make_unique<torch::optim::SGD>(encoder->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  }

  RunConfig config_;
  std::string path_;
};

TEST_F(CheckpointTest, CpuResumeIsExact) {
  torch::manual_seed(1);
  Encoder saved(config_.model(), 1, 28);
  auto saved_optimizer = Sgd(saved);
  Train(saved, *saved_optimizer, torch::rand({8, 1, 28, 28}));
  TrainingState state;
  state.step = 17;
  state.bank = torch::randn({10, 16});
  state.result.set_global_steps(17);
  SaveCheckpoint(path_, config_, saved, *saved_optimizer, state);

  torch::manual_seed(2);  // other initial values everywhere
  Encoder loaded(config_.model(), 1, 28);
  auto loaded_optimizer = Sgd(loaded);
  Train(loaded, *loaded_optimizer, torch::rand({8, 1, 28, 28}));
  TrainingState restored;
  LoadCheckpoint(path_, config_, torch::kCPU, loaded, *loaded_optimizer, &restored);

  EXPECT_EQ(restored.step, 17);
  EXPECT_EQ(restored.result.global_steps(), 17);
  EXPECT_TRUE(torch::equal(restored.bank, state.bank));
  for (const auto& p : saved->named_parameters()) {
    EXPECT_TRUE(torch::equal(loaded->named_parameters()[p.key()], p.value())) << p.key();
  }
  for (const auto& b : saved->named_buffers()) {
    EXPECT_TRUE(torch::equal(loaded->named_buffers()[b.key()], b.value())) << b.key();
  }
  // The next step is the same step: momentum restored too.
  const torch::Tensor images = torch::rand({8, 1, 28, 28});
  Train(saved, *saved_optimizer, images);
  Train(loaded, *loaded_optimizer, images);
  for (const auto& p : saved->named_parameters()) {
    EXPECT_TRUE(torch::equal(loaded->named_parameters()[p.key()], p.value())) << p.key() << " after a step";
  }
}

// The archive is read onto the requested device. On a CPU-only LibTorch (or with no GPU) asking for CUDA must fail
// with the file's name: proof that the device reaches the archive (ignored, the load would succeed on the CPU). On
// a GPU machine every tensor lands on the last GPU, as rank N of a node would need.
TEST_F(CheckpointTest, LoadsOntoTheRequestedDevice) {
  Encoder saved(config_.model(), 1, 28);
  auto saved_optimizer = Sgd(saved);
  Train(saved, *saved_optimizer, torch::rand({8, 1, 28, 28}));
  TrainingState state;
  state.bank = torch::randn({10, 16});
  SaveCheckpoint(path_, config_, saved, *saved_optimizer, state);

  if (!torch::cuda::is_available()) {
    TrainingState restored;
    try {
      LoadCheckpoint(path_, config_, torch::Device(torch::kCUDA, 0), saved, *saved_optimizer, &restored);
      FAIL() << "a CUDA load succeeded without CUDA: the device did not reach the archive";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("cannot read checkpoint " + path_), std::string::npos) << e.what();
    }
    return;
  }
  const torch::Device gpu(torch::kCUDA, static_cast<c10::DeviceIndex>(torch::cuda::device_count() - 1));
  Encoder loaded(config_.model(), 1, 28);
  loaded->to(gpu);
  auto loaded_optimizer = Sgd(loaded);
  TrainingState restored;
  LoadCheckpoint(path_, config_, gpu, loaded, *loaded_optimizer, &restored);
  EXPECT_EQ(restored.bank.device(), gpu);
  for (const auto& p : loaded->named_parameters()) EXPECT_EQ(p.value().device(), gpu) << p.key();
  for (const auto& b : loaded->named_buffers()) EXPECT_EQ(b.value().device(), gpu) << b.key();
  for (const auto& s : loaded_optimizer->state()) {
    const auto& momentum = static_cast<const torch::optim::SGDParamState&>(*s.second).momentum_buffer();
    if (momentum.defined()) {
      EXPECT_EQ(momentum.device(), gpu);
    }
  }
  for (const auto& p : saved->named_parameters()) {
    EXPECT_TRUE(torch::equal(loaded->named_parameters()[p.key()].cpu(), p.value())) << p.key();
  }
}

}  // namespace
}  // namespace tempered
