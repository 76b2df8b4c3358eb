#include "trainer/eval/metrics.h"

#include <algorithm>
#include <cmath>

#include <glog/logging.h>

namespace tempered {

namespace {
torch::Tensor OffDiagonal(int64_t n) { return ~torch::eye(n, torch::kBool); }
}  // namespace

double Uniformity(const torch::Tensor& embeddings) {
  CHECK_GE(embeddings.size(0), 2);
  const torch::Tensor x = embeddings.to(torch::kFloat64);
  const int64_t n = x.size(0);
  const torch::Tensor sq_dist = (2 - 2 * x.matmul(x.t())).clamp_min(0);  // unit rows: ||x - y||^2 = 2 - 2 s
  const torch::Tensor pairs = (-2 * sq_dist).masked_select(OffDiagonal(n));
  // log mean exp, stable
  const double log_mean = torch::logsumexp(pairs, 0).item<double>() - std::log(static_cast<double>(pairs.numel()));
  return -log_mean;
}

double Alignment(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).pow(2).sum(1).mean().item<double>();
}

double Tolerance(const torch::Tensor& embeddings, const torch::Tensor& labels) {
  const torch::Tensor x = embeddings.to(torch::kFloat64);
  const torch::Tensor same = labels.view({-1, 1}).eq(labels.view({1, -1})) & OffDiagonal(x.size(0));
  const int64_t count = same.sum().item<int64_t>();
  if (count == 0) return 0.0;
  return x.matmul(x.t()).masked_select(same).sum().item<double>() / static_cast<double>(count);
}

LocalSeparationStats LocalSeparation(const torch::Tensor& a, const torch::Tensor& b, int64_t top) {
  const int64_t n = a.size(0);
  const torch::Tensor sims = a.to(torch::kFloat64).matmul(b.to(torch::kFloat64).t());  // (n, n)
  LocalSeparationStats stats;
  stats.positive_similarity = sims.diagonal().mean().item<double>();
  const int64_t k = std::min<int64_t>(top, n - 1);
  if (k <= 0) return stats;
  const torch::Tensor negatives = sims.masked_fill(torch::eye(n, torch::kBool), -INFINITY);
  const torch::Tensor top_k = std::get<0>(negatives.topk(k, 1)).mean(0);  // (k)
  for (int64_t i = 0; i < k; ++i) stats.top_negative_similarity.push_back(top_k[i].item<double>());
  return stats;
}

double KnnTop1(const torch::Tensor& train, const torch::Tensor& train_labels, const torch::Tensor& test,
               const torch::Tensor& test_labels, int64_t k, double temperature, int64_t num_classes) {
  CHECK_GT(train.size(0), 0);
  k = std::min<int64_t>(k, train.size(0));
  const torch::Tensor train_t = train.to(torch::kFloat32).t();  // (d, N_train), a view: BLAS takes it transposed
  const torch::Tensor labels = train_labels.to(torch::kLong);
  int64_t correct = 0;
  // About 128 MB of similarities at a time, whatever the training set's size: 512 test images against 60,000, 67
  // against a bank of 500,000.
  const int64_t block_rows = std::max<int64_t>(1, (int64_t{1} << 25) / train.size(0));
  for (int64_t begin = 0; begin < test.size(0); begin += block_rows) {
    const torch::Tensor block = test.slice(0, begin, begin + block_rows).to(torch::kFloat32);
    auto [sims, index] = block.matmul(train_t).topk(k, 1);  // (b, k)
    const torch::Tensor weights = (sims / temperature).exp();
    const torch::Tensor votes = torch::zeros({block.size(0), num_classes}, torch::kFloat32)
                                    .scatter_add_(1, labels.index_select(0, index.flatten()).view_as(index), weights);
    correct += votes.argmax(1).eq(test_labels.slice(0, begin, begin + block_rows).to(torch::kLong))
                   .sum().item<int64_t>();
  }
  return 100.0 * static_cast<double>(correct) / static_cast<double>(test.size(0));
}

}  // namespace tempered
