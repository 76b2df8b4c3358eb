// The representation metrics of docs/paper.md §4, on L2-normalised embeddings (rows of unit norm).
#pragma once

#include <torch/torch.h>

#include <vector>

namespace tempered {

// -L_uniformity = -log E_{i != j} exp(-2 ||x_i - x_j||^2) over distinct pairs of `embeddings` (n, d), n >= 2.
// Larger is more uniform (about 3.94 is the ceiling at d = 128).
double Uniformity(const torch::Tensor& embeddings);
// E_i ||a_i - b_i||^2 over positive pairs (rows i of a and b).
double Alignment(const torch::Tensor& a, const torch::Tensor& b);
// Mean cosine similarity over distinct pairs (i != j) with labels[i] == labels[j]; 0 when there is no such pair.
double Tolerance(const torch::Tensor& embeddings, const torch::Tensor& labels);

// Local separation (Fig 8): anchors a_i, positives b_i, negatives b_j (j != i).
struct LocalSeparationStats {
  double positive_similarity = 0;               // mean_i s(a_i, b_i)
  std::vector<double> top_negative_similarity;  // [k-1] = mean_i of the k-th largest s(a_i, b_j), j != i
};
LocalSeparationStats LocalSeparation(const torch::Tensor& a, const torch::Tensor& b, int64_t top = 10);

// Weighted kNN top-1 accuracy (%) as in the authors' code: the K most similar training embeddings vote for their
// label with weight exp(s / temperature). Works in blocks of test rows to bound memory.
double KnnTop1(const torch::Tensor& train, const torch::Tensor& train_labels, const torch::Tensor& test,
               const torch::Tensor& test_labels, int64_t k, double temperature, int64_t num_classes);

}  // namespace tempered
