// Evaluation of an encoder (docs/paper.md §4): kNN and linear accuracy on the test split, and the representation
// metrics (uniformity, alignment, tolerance, local separation, relative-penalty entropy) on a fixed test subset.
#pragma once

#include "proto/tempered.pb.h"
#include "trainer/data/data.h"
#include "trainer/model/model.h"

namespace tempered {

struct Embedded {
  torch::Tensor features;   // (N, feature_dim) backbone features
  torch::Tensor embedding;  // (N, embed_dim) L2-normalised
};

// Embeds every image of `data` (un-augmented, eval mode). Collective: each rank embeds a contiguous block and the
// blocks are gathered to rank 0, which returns the whole set (on the CPU); the other ranks return undefined tensors.
Embedded EmbedAll(Encoder& encoder, const Dataset& data, const DataConfig& config);

// Linear evaluation on frozen features: a softmax classifier trained with SGD on standardised train features;
// returns test top-1 (%). Deterministic for a seed.
double LinearTop1(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                  const torch::Tensor& test_features, const torch::Tensor& test_labels, int64_t num_classes,
                  int epochs, double lr, uint64_t seed);

// What a full evaluation embedded: the whole train and test splits, rows in the splits' order (on rank 0 only).
struct EvaluatedSets {
  Embedded train;
  Embedded test;
};

// Writes prefix{features,embeddings,labels,indices}.npy of `set` (what EmbedAll returned for `data`): float32
// features and embeddings, int64 labels, and each row's index in its split's file order (Dataset.file_index: a
// data.*_subset keeps a sample), each file atomically. Rank 0's call, after a full evaluation.
void SaveEmbeddings(const std::string& prefix, const Embedded& set, const Dataset& data);

// Full evaluation. Collective (every rank must call it); the returned metrics are complete on rank 0 only.
// sets, when given: the features and embeddings it computed (EmbedAll's: on rank 0 only).
Metrics Evaluate(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config,
                 EvaluatedSets* sets = nullptr);

// The convergence curve's bounded evaluation (EvalConfig.curve_train_samples): kNN of metric_samples test images
// against curve_train_samples training images (class-stratified samples) and the representation metrics; no linear
// classifier. Cheap enough for every epoch (~6,000 images embedded by default). Collective, like Evaluate.
Metrics EvaluateCurve(Encoder& encoder, const Dataset& train, const Dataset& test, const RunConfig& config);

// L2 norm of every conv and linear weight (parameters of dim > 1): the scale of the weights that batch norm and the
// normalised embedding make scale-invariant, whose growth shrinks SGD's effective step (lr / |w|^2).
double WeightNorm(Encoder& encoder);

// kNN top-1 (%) on raw pixels (the no-learning baseline), same kNN as Evaluate.
double RawPixelKnnTop1(const Dataset& train, const Dataset& test, const RunConfig& config);

}  // namespace tempered
