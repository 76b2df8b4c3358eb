#include "trainer/io/checkpoint.h"

#include <google/protobuf/util/message_differencer.h>

#include <sstream>

#include "common/config.h"
#include "common/errors.h"

namespace tempered {

namespace {

// The config without the fields that do not change a result: the same identity as the sweep's run ids, so that a
// sweep's retry (same run id, perhaps another checkpoint_every_steps) resumes, and nothing else does.
RunConfig ComputationOf(const RunConfig& config) {
  RunConfig c = config;
  StripResultIndependentFields(&c);
  return c;
}

std::string FirstDifference(const RunConfig& a, const RunConfig& b) {
  std::string report;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&report);
  differ.Compare(a, b);
  return report.substr(0, report.find('\n'));
}

}  // namespace

void SaveCheckpoint(const std::string& path, const RunConfig& config, Encoder& encoder,
                    torch::optim::Optimizer& optimizer, const TrainingState& state) {
  torch::serialize::OutputArchive archive, model, optim;
  encoder->save(model);
  optimizer.save(optim);
  archive.write("model", model);
  archive.write("optimizer", optim);
  archive.write("step", c10::IValue(state.step));
  archive.write("config", c10::IValue(config.SerializeAsString()));
  archive.write("result", c10::IValue(state.result.SerializeAsString()));
  if (state.bank.defined()) archive.write("bank", state.bank.to(torch::kCPU), /*is_buffer=*/true);
  if (state.logit_scale.defined()) {
    archive.write("logit_scale", state.logit_scale.detach().to(torch::kCPU), /*is_buffer=*/true);
  }
  SaveArchive(path, archive);
}

void SaveArchive(const std::string& path, torch::serialize::OutputArchive& archive) {
  // Streamed into the file: through a string the archive was held twice more (a 500k-entry bank: +488 MiB).
  WriteFileAtomically(path, [&](const FileWriter& write) {
    archive.save_to([&](const void* data, size_t size) {
      write(data, size);
      return size;
    });
  });
}

void SaveModel(const std::string& path, Encoder& encoder) {
  torch::serialize::OutputArchive archive;  // what torch::save(encoder, path) writes
  encoder->save(archive);
  SaveArchive(path, archive);
}

void LoadCheckpoint(const std::string& path, const RunConfig& config, torch::Device device, Encoder& encoder,
                    torch::optim::Optimizer& optimizer, TrainingState* state) {
  torch::serialize::InputArchive archive, model, optim;
  c10::IValue step, saved_config, result;
  try {
    // Every tensor straight onto this rank's device. Without it they come back where rank 0 saved them (its
    // cuda:0), and reading them into the parameters moves those there (set_data), on every rank.
    archive.load_from(path, device);
    archive.read("model", model);
    archive.read("optimizer", optim);
    archive.read("step", step);
    archive.read("config", saved_config);
    archive.read("result", result);
  } catch (const c10::Error& e) {
    throw UserError("cannot read checkpoint " + path + ": " + e.what_without_backtrace());
  }
  RunConfig previous;
  if (!previous.ParseFromString(saved_config.toStringRef())) {
    throw UserError("checkpoint " + path + " holds no readable config");
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(ComputationOf(previous), ComputationOf(config))) {
    throw UserError("cannot resume from " + path + ": the config differs in a way that changes the result (" +
                    FirstDifference(ComputationOf(previous), ComputationOf(config)) + ")");
  }
  encoder->load(model);
  optimizer.load(optim);
  state->step = step.toInt();
  state->result.ParseFromString(result.toStringRef());
  torch::Tensor bank;
  if (archive.try_read("bank", bank, /*is_buffer=*/true)) state->bank = bank;
  torch::Tensor logit_scale;
  if (archive.try_read("logit_scale", logit_scale, /*is_buffer=*/true)) state->logit_scale = logit_scale;
}

}  // namespace tempered
