// The fused BatchNorm2d + ReLU (trainer/model/batch_norm_relu.h): equal to LibTorch's batch_norm then relu in training
// mode (output, gradients, running statistics), its backward checked by finite differences, and the encoder that
// uses it equal to the same modules run one by one in NCHW.
#include <gtest/gtest.h>

#include <limits>

#include "trainer/model/batch_norm_relu.h"
#include "trainer/model/model.h"

namespace tempered {
namespace {

namespace F = torch::nn::functional;

struct Case {
  torch::Tensor x, weight, bias, grad_y;
};

// Inputs far from zero mean and unit spread (as conv outputs are), weights of both signs.
Case MakeCase(torch::ScalarType dtype, std::vector<int64_t> shape) {
  const auto options = torch::TensorOptions(dtype);
  const int64_t channels = shape[1];
  Case c;
  c.x = torch::randn(shape, options) * 2 + torch::arange(channels, options).view({1, channels, 1, 1}) - 1.5;
  c.weight = torch::randn({channels}, options);
  c.bias = torch::randn({channels}, options) * 0.5;
  c.grad_y = torch::randn(shape, options);
  return c;
}

void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, double tol, const std::string& what) {
  const double err = (a - b).abs().max().item<double>();
  const double scale = std::max(1.0, b.abs().max().item<double>());
  EXPECT_LE(err, tol * scale) << what;
}

TEST(BatchNormReluTest, MatchesBatchNorm2dThenRelu) {
  torch::manual_seed(1);
  for (const auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 1, 1, 1}, {8, 5, 7, 7}, {33, 64, 14, 14}}) {
      const Case c = MakeCase(torch::kFloat, shape);
      const std::string what = "shape " + c10::str(c.x.sizes()) + (format == at::MemoryFormat::Contiguous ? " NCHW"
                                                                                                          : " NHWC");
      // Reference: LibTorch's batch_norm (training) then relu.
      torch::Tensor x_ref = c.x.clone().requires_grad_(), w_ref = c.weight.clone().requires_grad_(),
                    b_ref = c.bias.clone().requires_grad_();
      torch::Tensor mean_ref = torch::randn({shape[1]}), var_ref = torch::rand({shape[1]}) + 0.5;
      torch::Tensor mean = mean_ref.clone(), var = var_ref.clone();
      const torch::Tensor y_ref = torch::relu(
          F::batch_norm(x_ref, mean_ref, var_ref, F::BatchNormFuncOptions().weight(w_ref).bias(b_ref).training(true)
                                                      .momentum(0.1).eps(1e-5)));
      y_ref.backward(c.grad_y);

      torch::Tensor x = c.x.contiguous(format).requires_grad_(), w = c.weight.clone().requires_grad_(),
                    b = c.bias.clone().requires_grad_();
      const torch::Tensor y = BatchNormReluTraining(x, w, b, mean, var, {0.1, 1e-5});
      y.backward(c.grad_y.contiguous(format));
      EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast)) << what;
      ExpectClose(y, y_ref, 1e-5, what + " output");
      ExpectClose(mean, mean_ref, 1e-5, what + " running mean");
      ExpectClose(var, var_ref, 1e-5, what + " running var");
      ExpectClose(x.grad(), x_ref.grad(), 1e-5, what + " dx");
      ExpectClose(w.grad(), w_ref.grad(), 1e-5, what + " dweight");
      ExpectClose(b.grad(), b_ref.grad(), 1e-5, what + " dbias");
    }
  }
}

// bf16 activations (autocast's conv outputs) with fp32 parameters: the same as batch_norm + relu computed in float on
// the same bf16 values, but for the one rounding of the output and of dx to bf16 (2^-8 relative); the parameter
// gradients and running statistics come from float sums and match to float tolerance.
TEST(BatchNormReluTest, Bf16MatchesFloatBatchNormThenRelu) {
  torch::manual_seed(4);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{2, 1, 1, 1}, {8, 5, 7, 7}, {33, 64, 14, 14},
                                            {4, 37, 3, 5}}) {
    const Case c = MakeCase(torch::kFloat, shape);
    const std::string what = "bf16 shape " + c10::str(c.x.sizes());
    const torch::Tensor x16 = c.x.to(torch::kBFloat16), dy16 = c.grad_y.to(torch::kBFloat16);
    torch::Tensor x_ref = x16.to(torch::kFloat).requires_grad_(), w_ref = c.weight.clone().requires_grad_(),
                  b_ref = c.bias.clone().requires_grad_();
    torch::Tensor mean_ref = torch::zeros({shape[1]}), var_ref = torch::ones({shape[1]});
    torch::Tensor mean = mean_ref.clone(), var = var_ref.clone();
    const torch::Tensor y_ref = torch::relu(F::batch_norm(
        x_ref, mean_ref, var_ref, F::BatchNormFuncOptions().weight(w_ref).bias(b_ref).training(true).momentum(0.1)));
    y_ref.backward(dy16.to(torch::kFloat));

    torch::Tensor x = x16.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(),
                  w = c.weight.clone().requires_grad_(), b = c.bias.clone().requires_grad_();
    ASSERT_TRUE(BatchNormReluSupports(x));
    const torch::Tensor y = BatchNormReluTraining(x, w, b, mean, var, {0.1, 1e-5});
    y.backward(dy16.contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16) << what;
    EXPECT_EQ(x.grad().scalar_type(), torch::kBFloat16) << what;
    EXPECT_EQ(w.grad().scalar_type(), torch::kFloat) << what;
    // Elementwise: within one bf16 rounding of the float result (plus float noise).
    const auto expect_rounded = [&](const torch::Tensor& got, const torch::Tensor& want, const std::string& name) {
      const torch::Tensor err = (got.to(torch::kFloat) - want).abs();
      const torch::Tensor bound = want.abs() * (1.0 / 256) + 1e-5 * std::max(1.0, want.abs().max().item<double>());
      EXPECT_TRUE(err.le(bound).all().item<bool>())
          << what << " " << name << ": worst excess " << (err - bound).max().item<double>();
    };
    expect_rounded(y, y_ref, "output");
    expect_rounded(x.grad(), x_ref.grad(), "dx");
    ExpectClose(w.grad(), w_ref.grad(), 1e-5, what + " dweight");
    ExpectClose(b.grad(), b_ref.grad(), 1e-5, what + " dbias");
    ExpectClose(mean, mean_ref, 1e-5, what + " running mean");
    ExpectClose(var, var_ref, 1e-5, what + " running var");
  }
  // A NaN stays NaN through the bf16 rounding (relu propagates it).
  torch::Tensor x = torch::ones({2, 3, 2, 2}, torch::kBFloat16);
  x.index_put_({0, 1, 0, 0}, std::numeric_limits<float>::quiet_NaN());
  torch::Tensor mean = torch::zeros({3}), var = torch::ones({3});
  const torch::Tensor y = BatchNormReluTraining(x, torch::ones({3}), torch::zeros({3}), mean, var);
  EXPECT_TRUE(y.select(1, 1).isnan().all().item<bool>());
  EXPECT_FALSE(y.select(1, 0).isnan().any().item<bool>());
}

// Central differences of L = sum(grad_y * y) in float64 against the analytic backward.
TEST(BatchNormReluTest, BackwardMatchesFiniteDifferences) {
  torch::manual_seed(2);
  const Case c = MakeCase(torch::kDouble, {3, 2, 3, 3});
  torch::Tensor mean = torch::zeros({2}, torch::kDouble), var = torch::ones({2}, torch::kDouble);
  const auto loss = [&](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
    torch::Tensor m = mean.clone(), v = var.clone();
    return (BatchNormReluTraining(x, w, b, m, v) * c.grad_y).sum();
  };
  torch::Tensor x = c.x.clone().requires_grad_(), w = c.weight.clone().requires_grad_(),
                b = c.bias.clone().requires_grad_();
  loss(x, w, b).backward();
  const double h = 1e-6;
  for (auto* input : {&x, &w, &b}) {
    const torch::Tensor analytic = input->grad().clone();
    torch::Tensor base = input->detach().clone();
    for (int64_t i = 0; i < base.numel(); ++i) {
      torch::Tensor plus = base.clone(), minus = base.clone();
      plus.view(-1)[i] += h;
      minus.view(-1)[i] -= h;
      const auto eval = [&](const torch::Tensor& t) {
        torch::NoGradGuard no_grad;
        return loss(input == &x ? t : c.x, input == &w ? t : c.weight, input == &b ? t : c.bias).item<double>();
      };
      const double numeric = (eval(plus) - eval(minus)) / (2 * h);
      EXPECT_NEAR(analytic.view(-1)[i].item<double>(), numeric, 1e-6) << "element " << i;
    }
  }
}

ModelConfig SmallCnnConfig() {
  ModelConfig config;
  config.set_arch(ModelConfig::SMALL_CNN);
  config.set_norm(ModelConfig::BATCH);
  config.set_head(ModelConfig::LINEAR);
  config.set_embed_dim(16);
  config.set_width(8);
  return config;
}

// The encoder (channels_last, fused BN + ReLU in training) against its own modules run one by one on NCHW input:
// features, embedding, every parameter's gradient and every buffer after one training forward.
TEST(BatchNormReluTest, EncoderMatchesUnfusedModules) {
  torch::manual_seed(3);
  Encoder fused(SmallCnnConfig(), 1, 28);
  torch::manual_seed(3);
  Encoder plain(SmallCnnConfig(), 1, 28);
  const torch::Tensor images = torch::rand({12, 1, 28, 28});
  const EncoderOutput out = fused->forward(images);
  const torch::Tensor features = plain->named_children()["backbone"]->as<torch::nn::Sequential>()->forward(
      (images - 0.5) * 4.0);
  const torch::Tensor embedding = F::normalize(
      plain->named_children()["head"]->as<torch::nn::Sequential>()->forward(features),
      F::NormalizeFuncOptions().dim(1));
  ExpectClose(out.features, features, 1e-5, "features");
  ExpectClose(out.embedding, embedding, 1e-5, "embedding");
  const torch::Tensor weights = torch::randn_like(embedding);
  (out.embedding * weights).sum().backward();
  (embedding * weights).sum().backward();
  const auto plain_parameters = plain->named_parameters();
  for (const auto& p : fused->named_parameters()) {
    ExpectClose(p.value().grad(), plain_parameters[p.key()].grad(), 1e-4, "gradient of " + p.key());
  }
  const auto plain_buffers = plain->named_buffers();
  for (const auto& b : fused->named_buffers()) {
    ExpectClose(b.value().to(torch::kDouble), plain_buffers[b.key()].to(torch::kDouble), 1e-5, "buffer " + b.key());
  }
}

}  // namespace
}  // namespace tempered
