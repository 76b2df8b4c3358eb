#include "trainer/eval.h"

#include <glog/logging.h>

#include <cmath>

#include "comm/comm.h"
#include "trainer/loss.h"
#include "trainer/metrics.h"
#include "trainer/npy.h"

namespace tempered {

namespace {

constexpr int64_t kEvalBatch = 1024;
// The augmentation stream of the metric views: an epoch number no training epoch reaches.
constexpr int64_t kMetricViewEpoch = int64_t{1} << 40;

torch::Device DeviceOf(Encoder& encoder) { return encoder->parameters().front().device(); }

// Embeddings are computed on the encoder's device and returned on the CPU, where the metrics run; written batch by
// batch into their place, so that a large set (a 500k-image bank) is held once, not twice as a list and its concat.
Embedded EmbedRange(Encoder& encoder, const Dataset& data, int64_t begin, int64_t end) {
  Embedded out{torch::empty({end - begin, encoder->feature_dim()}), torch::empty({end - begin, encoder->embed_dim()})};
  for (int64_t b = begin; b < end; b += kEvalBatch) {
    const int64_t e = std::min(end, b + kEvalBatch);
    const EncoderOutput batch = encoder->forward(ToFloat(data.images.slice(0, b, e)).to(DeviceOf(encoder)));
    out.features.slice(0, b - begin, e - begin).copy_(batch.features);
    out.embedding.slice(0, b - begin, e - begin).copy_(batch.embedding);
  }
  return out;
}

torch::Tensor EmbedViews(Encoder& encoder, const Dataset& data, const std::vector<int64_t>& indices, int view,
                         const RunConfig& config) {
  const torch::Tensor images =
      AugmentBatch(data, indices, config.seed(), kMetricViewEpoch, view, AugmentOptionsFrom(config.data()));
  return encoder->forward(images.to(DeviceOf(encoder))).embedding.to(torch::kCPU);
}

// Uniformity, tolerance, alignment, local separation and penalty entropy on the first metric_samples test images.
void RepresentationMetrics(Encoder& encoder, const Dataset& test, const torch::Tensor& test_embedding,
                           const RunConfig& config, Metrics* metrics) {
  const int64_t m = std::min<int64_t>(config.eval().metric_samples(), test.size());
  const torch::Tensor embedding = test_embedding.slice(0, 0, m);
  metrics->set_metric_split("test");
  metrics->set_metric_samples(static_cast<int32_t>(m));
  metrics->mutable_inputs()->set_uniformity_tolerance("embeddings");
  metrics->mutable_inputs()->set_alignment_separation_entropy("augmented_view_embeddings");
  metrics->set_uniformity(Uniformity(embedding));
  metrics->set_tolerance(Tolerance(embedding, test.labels.slice(0, 0, m)));

  std::vector<int64_t> indices(m);
  for (int64_t i = 0; i < m; ++i) indices[i] = i;
  const torch::Tensor a = EmbedViews(encoder, test, indices, 0, config);
  const torch::Tensor b = EmbedViews(encoder, test, indices, 1, config);
  metrics->set_alignment(Alignment(a, b));
  const LocalSeparationStats separation = LocalSeparation(a, b);
  metrics->set_positive_similarity(separation.positive_similarity);
  for (double s : separation.top_negative_similarity) metrics->add_top_negative_similarity(s);
  // Relative penalty of each view-0 anchor over the other images' view-1 embeddings, at the run's tau.
  const torch::Tensor positive = torch::arange(m, torch::kLong);
  const torch::Tensor exclude = torch::full({m}, -1, torch::kLong);
  metrics->set_penalty_entropy(
      PenaltyEntropy(a.matmul(b.t()), positive, exclude, config.loss().tau()).mean().item<double>());
}

}  // namespace

Embedded EmbedAll(Encoder& encoder, const Dataset& data) {
  torch::NoGradGuard no_grad;
  const bool was_training = encoder->is_training();
  encoder->eval();
  const int64_t n = data.size();
  const int64_t world = comm::Size(), rank = comm::Rank();
  const int64_t begin = n * rank / world, end = n * (rank + 1) / world;
  const Embedded local = EmbedRange(encoder, data, begin, end);
  encoder->train(was_training);
  // Only rank 0 evaluates: the other ranks would each hold the whole set for nothing.
  return {comm::GatherToRoot(local.features, 0), comm::GatherToRoot(local.embedding, 0)};
}

double LinearTop1(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                  const torch::Tensor& test_features, const torch::Tensor& test_labels, int64_t num_classes,
                  int epochs, double lr, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor mean = train_features.mean(0), std = train_features.std(0) + 1e-6;
  const torch::Tensor x = (train_features - mean) / std, x_test = (test_features - mean) / std;
  torch::nn::Linear classifier(x.size(1), num_classes);
  torch::optim::SGD sgd(classifier->parameters(), torch::optim::SGDOptions(lr).momentum(0.9));
  constexpr int64_t kBatch = 256;
  const int64_t n = x.size(0), steps = epochs * ((n + kBatch - 1) / kBatch);
  int64_t step = 0;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, torch::kLong);
    for (int64_t b = 0; b < n; b += kBatch, ++step) {
      // Cosine decay of the classifier's lr over all of its steps.
      static_cast<torch::optim::SGDOptions&>(sgd.param_groups()[0].options())
          .lr(lr * 0.5 * (1 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(steps))));
      const torch::Tensor idx = order.slice(0, b, b + kBatch);
      sgd.zero_grad();
      torch::nn::functional::cross_entropy(classifier(x.index_select(0, idx)), train_labels.index_select(0, idx))
          .backward();
      sgd.step();
    }
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor predicted = classifier(x_test).argmax(1);
  return 100.0 * predicted.eq(test_labels).sum().item<double>() / static_cast<double>(test_labels.size(0));
}

namespace {

Dataset FirstImages(const Dataset& data, int64_t n) {
  n = std::min(n, data.size());
  return {data.images.slice(0, 0, n), data.labels.slice(0, 0, n), data.num_classes};
}

// kNN of `test` against `train` and the representation metrics, on rank 0 (the others return empty metrics).
// Collective: every rank embeds its block of both sets.
Metrics KnnAndRepresentation(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config,
                             Embedded* train_set, Embedded* test_set) {
  *train_set = EmbedAll(encoder, train);
  *test_set = EmbedAll(encoder, test);
  Metrics metrics;
  if (comm::Rank() != 0) return metrics;
  torch::NoGradGuard no_grad;
  const bool was_training = encoder->is_training();
  encoder->eval();
  const EvalConfig& e = config.eval();
  metrics.set_knn_top1(KnnTop1(train_set->embedding, train.labels, test_set->embedding, test.labels, e.knn_k(),
                               e.knn_temperature(), train.num_classes));
  metrics.set_knn_train_samples(static_cast<int32_t>(train.size()));
  metrics.set_knn_test_samples(static_cast<int32_t>(test.size()));
  metrics.mutable_inputs()->set_knn("embeddings");
  RepresentationMetrics(encoder, test, test_set->embedding, config, &metrics);
  encoder->train(was_training);
  return metrics;
}

}  // namespace

Metrics Evaluate(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config,
                 EvaluatedSets* sets) {
  EvaluatedSets embedded;
  Metrics metrics = KnnAndRepresentation(encoder, train, test, config, &embedded.train, &embedded.test);
  const EvalConfig& e = config.eval();
  if (comm::Rank() == 0 && e.linear_epochs() > 0) {
    metrics.set_linear_top1(LinearTop1(embedded.train.features, train.labels, embedded.test.features, test.labels,
                                       train.num_classes, e.linear_epochs(), e.linear_lr(), config.seed()));
    metrics.mutable_inputs()->set_linear("features");
  }
  if (sets) *sets = std::move(embedded);
  return metrics;
}

void SaveEmbeddings(const std::string& prefix, const Embedded& set, const Dataset& data) {
  WriteNpy(prefix + "features.npy", set.features.to(torch::kFloat));
  WriteNpy(prefix + "embeddings.npy", set.embedding.to(torch::kFloat));
  WriteNpy(prefix + "labels.npy", data.labels.to(torch::kLong));
  WriteNpy(prefix + "indices.npy", torch::arange(data.size(), torch::kLong));
}

Metrics EvaluateCurve(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config) {
  Embedded train_set, test_set;
  return KnnAndRepresentation(encoder, FirstImages(train, config.eval().curve_train_samples()),
                              FirstImages(test, config.eval().metric_samples()), config, &train_set, &test_set);
}

double WeightNorm(Encoder& encoder) {
  torch::NoGradGuard no_grad;
  double squares = 0;
  for (const torch::Tensor& p : encoder->parameters()) {
    if (p.dim() > 1) squares += p.to(torch::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(squares);
}

double RawPixelKnnTop1(const Dataset& train, const Dataset& test, const EvalConfig& config) {
  const auto flat = [](const Dataset& d) {
    return torch::nn::functional::normalize(ToFloat(d.images).flatten(1),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  return KnnTop1(flat(train), train.labels, flat(test), test.labels, config.knn_k(), config.knn_temperature(),
                 train.num_classes);
}

}  // namespace tempered
