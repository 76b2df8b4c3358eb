#include "trainer/io/event_writer.h"

#include <algorithm>

namespace tempered {

void AddHistogram(EventWriter& writer, const std::string& tag, int64_t step, const torch::Tensor& values) {
  torch::Tensor v = values.detach().flatten().to(torch::kCPU, torch::kDouble);
  v = v.masked_select(torch::isfinite(v));
  if (v.numel() == 0) return;
  tensorboard::Summary::Value value;
  value.set_tag(tag);
  tensorboard::HistogramProto* h = value.mutable_histo();
  const double lo = v.min().item<double>(), hi = v.max().item<double>();
  h->set_min(lo);
  h->set_max(hi);
  h->set_num(static_cast<double>(v.numel()));
  h->set_sum(v.sum().item<double>());
  h->set_sum_squares(v.square().sum().item<double>());
  if (lo == hi) {
    h->add_bucket_limit(hi);
    h->add_bucket(static_cast<double>(v.numel()));
  } else {
    // histc's bins are [lo + i w, lo + (i + 1) w) with the last one closed: bucket_limit is each bin's right edge.
    const torch::Tensor counts = torch::histc(v, kHistogramBuckets, lo, hi);  // (kHistogramBuckets,)
    for (int i = 0; i < kHistogramBuckets; ++i) {
      h->add_bucket_limit(i + 1 == kHistogramBuckets ? hi : lo + (hi - lo) * (i + 1) / kHistogramBuckets);
      h->add_bucket(counts[i].item<double>());
    }
  }
  writer.AddValue(step, value);
}

void AddSimilarityHistograms(EventWriter& writer, int64_t step, const torch::Tensor& anchors,
                             const torch::Tensor& candidates, const torch::Tensor& positive,
                             const torch::Tensor& exclude) {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = anchors.detach(), c = candidates.detach();
  // Every kHistogramColumns-th candidate at most: with a memory bank there are as many candidates as images (a full
  // (256, 1.28M) matrix is 1.3 GB at every log step); a fixed stride keeps the histogram an unbiased sample.
  const int64_t m = c.size(0), stride = (m + kHistogramColumns - 1) / kHistogramColumns;
  const torch::Tensor columns = torch::arange(0, m, std::max<int64_t>(stride, 1), positive.options());  // (k)
  const torch::Tensor similarity = a.mm(c.index_select(0, columns).t());                            // (n, k)
  // A sampled column is a negative of row i unless it is row i's positive or the candidate it excludes (-1: none).
  const torch::Tensor column = columns.unsqueeze(0);
  const torch::Tensor negative = column.ne(positive.unsqueeze(1)) & column.ne(exclude.unsqueeze(1));
  AddHistogram(writer, "similarity/positive", step, (a * c.index_select(0, positive)).sum(1));
  AddHistogram(writer, "similarity/negative", step, similarity.masked_select(negative));
}

void AddMetrics(EventWriter& writer, int64_t step, const Metrics& metrics, const EvalConfig& eval,
                const std::string& prefix) {
  writer.AddScalar(prefix + "knn_top1", step, metrics.knn_top1());
  if (prefix == "eval/" && eval.linear_epochs() > 0) {
    writer.AddScalar(prefix + "linear_top1", step, metrics.linear_top1());
  }
  writer.AddScalar(prefix + "uniformity", step, metrics.uniformity());
  writer.AddScalar(prefix + "alignment", step, metrics.alignment());
  writer.AddScalar(prefix + "tolerance", step, metrics.tolerance());
  writer.AddScalar(prefix + "penalty_entropy", step, metrics.penalty_entropy());
}

}  // namespace tempered
