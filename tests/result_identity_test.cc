// The fields that do not change a result: the sweep's run ids (launch/sweep/sweep_spec.cc) and the checkpoint's identity
// (trainer/io/checkpoint.cc) must agree on every RunConfig field, or a sweep's retry of a run is refused by its own
// checkpoint (another checkpoint_every_steps) or resumes a checkpoint into another run's result (another device).
// Every leaf field is walked by reflection, so a field added to the proto later is checked too.
#include <gtest/gtest.h>

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/errors.h"
#include "launch/sweep/sweep_spec.h"
#include "trainer/io/checkpoint.h"

namespace tempered {
namespace {

namespace pb = google::protobuf;

// Sets leaf field `f` of `m` to a value other than its current one.
void Change(pb::Message* m, const pb::FieldDescriptor* f) {
  const pb::Reflection* r = m->GetReflection();
  using F = pb::FieldDescriptor;
  if (f->is_repeated()) {
    ASSERT_EQ(f->cpp_type(), F::CPPTYPE_INT32) << f->full_name() << ": a repeated type this test does not know";
    return r->AddInt32(m, f, 7);
  }
  switch (f->cpp_type()) {
    case F::CPPTYPE_BOOL: return r->SetBool(m, f, !r->GetBool(*m, f));
    case F::CPPTYPE_INT32: return r->SetInt32(m, f, r->GetInt32(*m, f) + 3);
    case F::CPPTYPE_INT64: return r->SetInt64(m, f, r->GetInt64(*m, f) + 3);
    case F::CPPTYPE_UINT64: return r->SetUInt64(m, f, r->GetUInt64(*m, f) + 3);
    case F::CPPTYPE_FLOAT: return r->SetFloat(m, f, r->GetFloat(*m, f) + 0.25f);
    case F::CPPTYPE_STRING: return r->SetString(m, f, r->GetString(*m, f) + "x");
    case F::CPPTYPE_ENUM: {
      const pb::EnumDescriptor* e = f->enum_type();
      return r->SetEnum(m, f, e->value((r->GetEnum(*m, f)->index() + 1) % e->value_count()));
    }
    default: FAIL() << f->full_name() << ": a field type this test does not know";
  }
}

// The path ("data.workers") of every leaf field of `d`, recursing into message fields.
void LeafPaths(const pb::Descriptor* d, const std::string& prefix, std::vector<std::string>* paths) {
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      LeafPaths(f->message_type(), prefix + f->name() + ".", paths);
    } else {
      paths->push_back(prefix + f->name());
    }
  }
}

// `config` with the leaf field at `path` changed.
RunConfig Changed(RunConfig config, const std::string& path) {
  pb::Message* m = &config;
  size_t begin = 0;
  for (size_t dot; (dot = path.find('.', begin)) != std::string::npos; begin = dot + 1) {
    m = m->GetReflection()->MutableMessage(m, m->GetDescriptor()->FindFieldByName(path.substr(begin, dot - begin)));
  }
  Change(m, m->GetDescriptor()->FindFieldByName(path.substr(begin)));
  return config;
}

class ResultIdentityTest : public testing::Test {
 protected:
  void SetUp() override {
    base_ = ResolveConfig(RunConfig());
    base_.mutable_model()->set_width(4);  // a small checkpoint
    base_.mutable_model()->set_embed_dim(16);
    LeafPaths(RunConfig::descriptor(), "", &paths_);
    checkpoint_ = (std::filesystem::temp_directory_path() / ("result_identity_test." + std::to_string(getpid()) +
                                                             ".pt")).string();
    encoder_ = Encoder(base_.model(), 1, 28);
    optimizer_ = std::make_unique<torch::optim::SGD>(encoder_->parameters(), torch::optim::SGDOptions(0.1));
    SaveCheckpoint(checkpoint_, base_, encoder_, *optimizer_, TrainingState());
  }
  void TearDown() override { std::filesystem::remove(checkpoint_); }

  // Whether a checkpoint written under base_ resumes under `config`.
  bool CheckpointAccepts(const RunConfig& config) {
    TrainingState state;
    try {
      LoadCheckpoint(checkpoint_, config, torch::kCPU, encoder_, *optimizer_, &state);
      return true;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("cannot resume from"), std::string::npos) << e.what();
      return false;
    }
  }

  RunConfig base_;
  std::vector<std::string> paths_;
  std::string checkpoint_;
  Encoder encoder_{nullptr};
  std::unique_ptr<torch::optim::SGD> optimizer_;
};

TEST_F(ResultIdentityTest, RunIdAndCheckpointAgreeOnEveryField) {
  ASSERT_GT(paths_.size(), 40u);
  EXPECT_TRUE(CheckpointAccepts(base_));
  for (const std::string& path : paths_) {
    const RunConfig changed = Changed(base_, path);
    const bool same_run_id = RunId(changed) == RunId(base_);
    EXPECT_EQ(CheckpointAccepts(changed), same_run_id)
        << path << (same_run_id ? " is not part of the run id but is part of the checkpoint's identity"
                                : " is part of the run id but not of the checkpoint's identity");
  }
}

// The one definition names leaf fields that exist, and exactly those leave the run id unchanged.
TEST_F(ResultIdentityTest, ResultIndependentFieldsAreTheOnesThatLeaveTheRunIdUnchanged) {
  const std::vector<std::string> independent = ResultIndependentFields();
  for (const std::string& path : independent) {
    EXPECT_NE(std::find(paths_.begin(), paths_.end(), path), paths_.end()) << path << " is no RunConfig field";
  }
  for (const std::string& path : paths_) {
    const bool listed = std::find(independent.begin(), independent.end(), path) != independent.end();
    EXPECT_EQ(RunId(Changed(base_, path)) == RunId(base_), listed) << path;
  }
  // The decisions themselves (see ResultIndependentFields): the device and evaluation settings change results.
  for (const char* path : {"device", "eval.curve_train_samples", "eval.knn_k", "data.test_subset", "bf16"}) {
    EXPECT_EQ(std::count(independent.begin(), independent.end(), path), 0) << path;
  }
  for (const char* path : {"checkpoint_every_steps", "gradient_bucket_kib", "data.prefetch_steps"}) {
    EXPECT_EQ(std::count(independent.begin(), independent.end(), path), 1) << path;
  }
}

// Stripping keeps a config without a data message without one: the sweep's ids of existing runs stay as they were.
TEST_F(ResultIdentityTest, StrippingCreatesNoEmptyMessage) {
  RunConfig config;
  config.set_threads(2);
  StripResultIndependentFields(&config);
  EXPECT_FALSE(config.has_data());
  EXPECT_EQ(config.ByteSizeLong(), 0u);
}

}  // namespace
}  // namespace tempered
