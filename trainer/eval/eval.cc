#include "trainer/eval/eval.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>

#include "comm/comm.h"
#include "comm/fail_together.h"
#include "common/errors.h"
#include "trainer/data/augment.h"
#include "trainer/eval/metrics.h"
#include "trainer/io/npy.h"
#include "trainer/loss/loss.h"

namespace tempered {

namespace {

// Images per forward pass of an evaluation: 1,024 up to 32 px, fewer above, so that the activations stay near the
// same size (ResNet-50 at 224 px: 10 GB peak per rank with 1,024 images a pass; 3.9 GB for the whole run, training
// included, with 21).
constexpr int64_t kEvalBatchPixels = 1024 * 32 * 32;
int64_t EvalBatch(int64_t image_size) {
  return std::clamp<int64_t>(kEvalBatchPixels / (image_size * image_size), 16, 1024);
}
// The augmentation stream of the metric views: an epoch number no training epoch reaches.
constexpr int64_t kMetricViewEpoch = int64_t{1} << 40;

torch::Device DeviceOf(Encoder& encoder) { return encoder->parameters().front().device(); }

// Embeddings are computed on the encoder's device and returned on the CPU, where the metrics run; written batch by
// batch into their place, so that a large set (a 500k-image bank) is held once, not twice as a list and its concat.
Embedded EmbedRange(Encoder& encoder, const Dataset& data, int64_t begin, int64_t end, const DataConfig& config) {
  const int64_t image_size = ImageSizeOf(config);
  const double crop_fraction = EvalCropFractionOf(config);
  Embedded out{torch::empty({end - begin, encoder->feature_dim()}), torch::empty({end - begin, encoder->embed_dim()})};
  const int64_t eval_batch = EvalBatch(image_size);
  for (int64_t b = begin; b < end; b += eval_batch) {
    const int64_t e = std::min(end, b + eval_batch);
    const EncoderOutput batch = encoder->forward(
        EvalImagesOf(data, b, e, image_size, crop_fraction, config.workers()).to(DeviceOf(encoder)));
    out.features.slice(0, b - begin, e - begin).copy_(batch.features);
    out.embedding.slice(0, b - begin, e - begin).copy_(batch.embedding);
  }
  return out;
}

torch::Tensor EmbedViews(Encoder& encoder, const Dataset& data, const std::vector<int64_t>& indices, int view,
                         const RunConfig& config) {
  const AugmentOptions options = AugmentOptionsFrom(config.data());
  const auto n = static_cast<int64_t>(indices.size()), batch = EvalBatch(ImageSizeOf(config.data()));
  std::vector<torch::Tensor> embeddings;
  for (int64_t b = 0; b < n; b += batch) {  // in passes of EvalBatch images, as EmbedRange
    const std::vector<int64_t> part(indices.begin() + b, indices.begin() + std::min(n, b + batch));
    const torch::Tensor images = AugmentBatch(data, part, config.seed(), kMetricViewEpoch, view, options);
    embeddings.push_back(encoder->forward(images.to(DeviceOf(encoder))).embedding.to(torch::kCPU));
  }
  return torch::cat(embeddings);
}

// Uniformity, tolerance, alignment, local separation and penalty entropy on the metric samples: a class-stratified
// sample of metric_samples test images (StratifiedSample), the same images at every evaluation of every run.
void RepresentationMetrics(Encoder& encoder, const Dataset& test, const torch::Tensor& test_embedding,
                           const RunConfig& config, Metrics* metrics) {
  const std::vector<int64_t> indices = StratifiedSample(test.labels, config.eval().metric_samples());
  const auto m = static_cast<int64_t>(indices.size());
  const torch::Tensor rows = torch::tensor(indices, torch::kInt64);
  const torch::Tensor embedding = test_embedding.index_select(0, rows);
  metrics->set_metric_split("test");
  metrics->set_metric_samples(static_cast<int32_t>(m));
  metrics->mutable_inputs()->set_uniformity_tolerance("embeddings");
  metrics->mutable_inputs()->set_alignment_separation_entropy("augmented_view_embeddings");
  metrics->mutable_inputs()->set_metric_samples(SampleDescription(m, test.size()));
  metrics->set_uniformity(Uniformity(embedding));
  metrics->set_tolerance(Tolerance(embedding, test.labels.index_select(0, rows)));

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

Embedded EmbedAll(Encoder& encoder, const Dataset& data, const DataConfig& config) {
  torch::NoGradGuard no_grad;
  const bool was_training = encoder->is_training();
  encoder->eval();
  const int64_t n = data.size();
  const int64_t world = comm::Size(), rank = comm::Rank();
  const int64_t begin = n * rank / world, end = n * (rank + 1) / world;
  // A streamed file that cannot be read fails one rank's block: every rank learns it before the gather.
  Embedded local;
  std::string error;
  try {
    local = EmbedRange(encoder, data, begin, end, config);
  } catch (const UserError& e) {
    error = std::string(e.what()) + " (read for an evaluation)";
  }
  encoder->train(was_training);
  comm::FailTogether(error);
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

// The curve's bounded sets: class-stratified samples (StratifiedSample), so that a class-ordered image folder's
// sample holds every class.
Dataset SampleImages(const Dataset& data, int64_t n) {
  if (n >= data.size()) return data;
  return SelectRows(data, StratifiedSample(data.labels, n));
}

// kNN of `test` against `train` and the representation metrics, on rank 0 (the others return empty metrics).
// Collective: every rank embeds its block of both sets.
// train_total / test_total: the sizes of the splits the sets were sampled from.
Metrics KnnAndRepresentation(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config,
                             Embedded* train_set, Embedded* test_set, int64_t train_total, int64_t test_total) {
  *train_set = EmbedAll(encoder, train, config.data());
  *test_set = EmbedAll(encoder, test, config.data());
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
  metrics.mutable_inputs()->set_knn_samples(SampleDescription(train.size(), train_total) + " training, " +
                                            SampleDescription(test.size(), test_total) + " test images");
  RepresentationMetrics(encoder, test, test_set->embedding, config, &metrics);
  encoder->train(was_training);
  return metrics;
}

}  // namespace

Metrics Evaluate(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config,
                 EvaluatedSets* sets) {
  EvaluatedSets embedded;
  Metrics metrics = KnnAndRepresentation(encoder, train, test, config, &embedded.train, &embedded.test, train.size(),
                                         test.size());
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
  WriteNpy(prefix + "indices.npy", data.file_index.defined() ? data.file_index.to(torch::kLong)
                                                             : torch::arange(data.size(), torch::kLong));
}

Metrics EvaluateCurve(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config) {
  Embedded train_set, test_set;
  return KnnAndRepresentation(encoder, SampleImages(train, config.eval().curve_train_samples()),
                              SampleImages(test, config.eval().metric_samples()), config, &train_set, &test_set,
                              train.size(), test.size());
}

double WeightNorm(Encoder& encoder) {
  torch::NoGradGuard no_grad;
  double squares = 0;
  for (const torch::Tensor& p : encoder->parameters()) {
    if (p.dim() > 1) squares += p.to(torch::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(squares);
}

double RawPixelKnnTop1(const Dataset& train, const Dataset& test, const RunConfig& config) {
  const auto flat = [&](const Dataset& d) {
    const torch::Tensor pixels = EvalImagesOf(d, 0, d.size(), ImageSizeOf(config.data()),
                                              EvalCropFractionOf(config.data()), config.data().workers());
    return torch::nn::functional::normalize(pixels.flatten(1), torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  const EvalConfig& e = config.eval();
  return KnnTop1(flat(train), train.labels, flat(test), test.labels, e.knn_k(), e.knn_temperature(),
                 train.num_classes);
}

}  // namespace tempered
