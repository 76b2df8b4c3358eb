// What tempered-train writes to its TensorBoard event file (rank 0) beyond scalars, under the tags TensorBoard groups
// by their prefix: histograms of tensors and the metrics of an evaluation. The file itself: common/event_file.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "common/event_file.h"
#include "proto/tempered.pb.h"

namespace tempered {

// A histogram of every element of `values` (any shape, dtype or device) in kHistogramBuckets even buckets between
// its min and max; non-finite values are left out. An empty tensor writes nothing.
constexpr int kHistogramBuckets = 30;  // TensorBoard shows 30 bins by default
void AddHistogram(EventWriter& writer, const std::string& tag, int64_t step, const torch::Tensor& values);

// Histograms similarity/positive and similarity/negative of one step's cosine similarities: anchors (n, d) against
// candidates (m, d), both L2-normalised, any device; row i's positive is candidates[positive[i]], and
// candidates[exclude[i]] (the anchor itself; -1 for none) is neither positive nor negative. The negatives are those
// of every ceil(m / kHistogramColumns)-th candidate: memory and time stay O(n x 4096) with a bank of any size.
constexpr int64_t kHistogramColumns = 4096;
void AddSimilarityHistograms(EventWriter& writer, int64_t step, const torch::Tensor& anchors,
                             const torch::Tensor& candidates, const torch::Tensor& positive,
                             const torch::Tensor& exclude);
// Scalars <prefix><metric> of one evaluation: "eval/" for a full evaluation, whose eval/linear_top1 is written
// when linear evaluation ran (linear_epochs > 0); "curve/" for the convergence curve, which has no linear classifier.
void AddMetrics(EventWriter& writer, int64_t step, const Metrics& metrics, const EvalConfig& eval,
                const std::string& prefix = "eval/");

}  // namespace tempered
